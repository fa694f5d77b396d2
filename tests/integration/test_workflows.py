"""The shipped workflows against a real server, without a browser: every API twin runs
(what `make demo` and scripts queue), every UI workflow has its thumbnail, and the server
offers them as templates. The browser tests prove the twins equal the frontend's conversion."""

import json
import re
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.integration

WORKFLOWS_DIR = Path(__file__).resolve().parents[2] / "workflows"
API_FILES = sorted((WORKFLOWS_DIR / "api").glob("*_api.json"))
UI_FILES = sorted(WORKFLOWS_DIR.glob("*.json"))


def test_each_runnable_workflow_has_an_api_twin():
    names = {path.stem for path in UI_FILES}
    assert {"text_to_image", "compare_solvers", "custom_sampling", "native_flux", "native_sd3"} <= names
    assert {path.stem.removesuffix("_api") for path in API_FILES} == names - {"native_flux", "native_sd3"}


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
    listed = comfy_server.get_json("/api/workflow_templates")["comfyui_flowmatch"]
    assert sorted(listed) == sorted(path.stem for path in WORKFLOWS_DIR.glob("*.json"))
    for path in UI_FILES:
        assert comfy_server.get_json(f"/api/workflow_templates/comfyui_flowmatch/{path.name}") == \
            json.loads(path.read_text())
