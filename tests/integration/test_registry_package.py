"""The pack as the Comfy registry sees it: comfy-cli (PyPI `comfy-cli`, run offline) validates
pyproject.toml and packs an archive without tests or developer files; the LICENSE, icon and
dependencies that pyproject.toml declares are real and consistent."""

import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
COMFY_CLI = [sys.executable, "-m", "comfy_cli", "--skip-prompt", "--no-enable-telemetry"]
LEFT_OUT = ("tests/", ".ci/", "scripts/", "Makefile", ".gitignore")


@pytest.fixture(scope="module")
def checkout(copy_pack_files, tmp_path_factory) -> Path:
    """The working tree's files in a fresh git repository (`comfy node pack` archives what git tracks)."""
    path = copy_pack_files(tmp_path_factory.mktemp("registry") / "comfyui-flowmatch")
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    subprocess.run(["git", "add", "-A"], cwd=path, check=True)
    return path


def comfy(checkout: Path, *args: str) -> subprocess.CompletedProcess:
    home = checkout.parent / "home"  # comfy-cli keeps its config under $HOME
    home.mkdir(exist_ok=True)
    return subprocess.run([*COMFY_CLI, *args], cwd=checkout, env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)


def test_comfy_node_validate_passes(checkout):
    result = comfy(checkout, "node", "validate")
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "validation checks passed" in output, output


def test_comfy_node_pack_ships_the_pack_without_tests_or_dev_files(checkout):
    result = comfy(checkout, "node", "pack")
    assert result.returncode == 0, result.stdout + result.stderr
    with zipfile.ZipFile(checkout / "node.zip") as archive:
        names = set(archive.namelist())
    assert not [name for name in names if name.startswith(LEFT_OUT)], sorted(names)
    code = {str(path.relative_to(checkout)) for folder in ("nodes", "samplers", "models", "client")
            for path in (checkout / folder).glob("*.py")}
    must_ship = {"__init__.py", "LICENSE", "pyproject.toml", "requirements.txt", "README.md",
                 "models/weights/flowmatch_shapes.safetensors", "models/weights/flowmatch_shapes_reflow.safetensors",
                 *code}
    assert must_ship <= names, sorted(must_ship - names)


def test_license_file_is_the_license_pyproject_names():
    assert PYPROJECT["project"]["license"] == "MIT" and PYPROJECT["project"]["license-files"] == ["LICENSE"]
    assert (REPO_ROOT / "LICENSE").read_text().startswith("MIT License\n")


def test_icon_is_a_small_square_picture_in_the_repository():
    url = PYPROJECT["tool"]["comfy"]["Icon"]
    repository = PYPROJECT["project"]["urls"]["Repository"].removeprefix("https://github.com/")
    match = re.fullmatch(rf"https://raw\.githubusercontent\.com/{re.escape(repository)}/main/(.+)", url)
    assert match, url
    with Image.open(REPO_ROOT / match.group(1)) as icon:
        assert icon.width == icon.height <= 400, icon.size
        assert len(icon.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 16  # a picture, not a blank


def requirement_names(lines) -> set[str]:
    names = set()
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def test_dependencies_are_only_what_comfyui_does_not_ship():
    comfyui = Path(os.environ.get("COMFYUI_PATH") or REPO_ROOT / ".comfyui")
    shipped = requirement_names((comfyui / "requirements.txt").read_text().splitlines())
    declared = requirement_names(PYPROJECT["project"]["dependencies"])
    assert declared and not declared & shipped, declared & shipped
    assert requirement_names((REPO_ROOT / "requirements.txt").read_text().splitlines()) == declared
