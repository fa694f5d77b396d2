"""The shipped workflows against a real server, without a browser: every API twin runs
(what `make demo` and scripts queue), every UI workflow has its thumbnail, and the server
offers them as templates. The browser tests prove the twins equal the frontend's conversion."""

import json
import re
from pathlib import Path
from urllib.parse import quote

import pytest
from PIL import Image

from comfyui_flowmatch.client.api import ComfyAPI
from comfyui_flowmatch.client.images import SourceImage, upload
from comfyui_flowmatch.client.local_server import PACK_FOLDER_NAME

pytestmark = pytest.mark.integration

WORKFLOWS_DIR = Path(__file__).resolve().parents[2] / "example_workflows"
API_FILES = sorted((WORKFLOWS_DIR / "api").glob("*_api.json"))
UI_FILES = sorted(WORKFLOWS_DIR.glob("*.json"))


@pytest.fixture(scope="module", autouse=True)
def example_inputs(comfy_server):
    """The images the workflows' Load Image nodes name, in the server's input folder."""
    for path in sorted((WORKFLOWS_DIR / "inputs").glob("*.png")):
        upload(ComfyAPI(comfy_server.url), SourceImage(path, path.name))


def needs_downloads(path: Path) -> bool:
    """Whether the workflow's loaders carry download entries (`properties.models`): native models."""
    return any(node.get("properties", {}).get("models") for node in json.loads(path.read_text())["nodes"])


def test_each_runnable_workflow_has_an_api_twin():
    """Templates are titled "<n> <Title>.json"; the twin of a runnable one is api/<title_in_snake_case>_api.json."""
    assert [path.stem for path in UI_FILES][:3] == ["1 Text to image", "2 Compare solvers", "3 Custom sampling"]
    assert {"6 Edit image", "7 Invert and reconstruct"} <= {path.stem for path in UI_FILES}
    assert all(re.fullmatch(r"\d+ \S.*", path.stem) for path in UI_FILES), [path.stem for path in UI_FILES]
    runnable = {re.sub(r"^\d+ ", "", path.stem).lower().replace(" ", "_") for path in UI_FILES if not needs_downloads(path)}
    assert {path.stem.removesuffix("_api") for path in API_FILES} == runnable
    assert len(runnable) < len(UI_FILES), "the native workflows carry download entries"


@pytest.mark.parametrize("path", API_FILES, ids=lambda p: p.stem)
def test_api_workflow_runs(comfy_server, path):
    """It runs, saves one image, and every "N NFE" a node title promises is what its sampler reports."""
    prompt = json.loads(path.read_text())
    entry = comfy_server.run_prompt(prompt)
    assert entry["status"]["status_str"] == "success", entry["status"]["messages"]
    images = [image for output in entry["outputs"].values() for image in output.get("images", [])]
    assert len(images) == 1, entry["outputs"]
    with Image.open(comfy_server.output_dir / images[0]["subfolder"] / images[0]["filename"]) as image:
        assert image.width > 0 and image.height > 0
    for node_id, node in prompt.items():
        promised = re.search(r"(\d+) NFE", node["_meta"]["title"])
        if promised:
            assert entry["outputs"][node_id]["text"] == [f"{node['inputs']['solver']}: {promised[1]} model evaluations (NFE), {node['inputs']['steps']} steps accepted, 0 rejected"]


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_ui_workflow_has_a_thumbnail(path):
    with Image.open(path.with_suffix(".jpg")) as thumbnail:
        assert thumbnail.format == "JPEG" and thumbnail.width == 256, (thumbnail.format, thumbnail.size)


def test_server_offers_the_workflows_as_templates(comfy_server):
    """Every UI workflow, and none of the API twins in api/ (the frontend opens only UI workflows)."""
    listed = comfy_server.get_json("/api/workflow_templates")[PACK_FOLDER_NAME]
    assert sorted(listed) == sorted(path.stem for path in UI_FILES)
    for path in UI_FILES:
        assert comfy_server.get_json(f"/api/workflow_templates/{PACK_FOLDER_NAME}/{quote(path.name)}") == \
            json.loads(path.read_text())
