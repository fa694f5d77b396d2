"""The pack's import rules: pure packages stay pure, our own packages are imported relatively."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
COMFYUI_MODULES = r"(comfy|comfy_api|comfy_extras|comfy_execution|folder_paths|nodes|server|execution|latent_preview|node_helpers)"
OUR_PACKAGES = r"(nodes|models|samplers|client|benchmarks)"


def pack_sources(*folders: str) -> list[Path]:
    return [path for folder in folders for path in (REPO_ROOT / folder).rglob("*.py")]


def import_lines(path: Path, module_pattern: str) -> list[str]:
    pattern = rf"^\s*(from|import)\s+{module_pattern}(\.|\s|$)"
    return [line for line in path.read_text().splitlines() if re.match(pattern, line)]


@pytest.mark.parametrize("folder", ["samplers", "models", "client"])
def test_pure_packages_do_not_import_comfyui(folder):
    offenders = {str(p.relative_to(REPO_ROOT)): import_lines(p, COMFYUI_MODULES) for p in pack_sources(folder)}
    assert not {k: v for k, v in offenders.items() if v}


def test_pack_never_imports_itself_by_absolute_name():
    sources = pack_sources("nodes", "samplers", "models", "client", "benchmarks") + [REPO_ROOT / name for name in ("__init__.py", "__main__.py", "demo.py")]
    offenders = {
        str(p.relative_to(REPO_ROOT)): import_lines(p, OUR_PACKAGES) + import_lines(p, "comfyui_flowmatch")
        for p in sources
        if p.exists()
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_the_checks_catch_offending_lines(tmp_path):
    offending = tmp_path / "bad.py"
    offending.write_text("import samplers.solvers\nfrom nodes import X\nfrom comfy.samplers import KSAMPLER\n")
    assert len(import_lines(offending, OUR_PACKAGES)) == 2
    assert len(import_lines(offending, COMFYUI_MODULES)) == 2
    relative = tmp_path / "good.py"
    relative.write_text("from .samplers import integrate\nfrom ..models import dit\nimport torch\n")
    assert import_lines(relative, OUR_PACKAGES) == [] and import_lines(relative, COMFYUI_MODULES) == []


def test_pure_packages_import_without_comfyui():
    code = (
        "import sys, comfyui_flowmatch, comfyui_flowmatch.samplers, comfyui_flowmatch.models;"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('comfy', 'comfy_api', 'folder_paths', 'nodes')];"
        "assert not loaded, loaded;"
        "assert hasattr(comfyui_flowmatch, 'comfy_entrypoint')"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
