"""The shipped workflows in the real frontend: they load cleanly, their API twins are the
frontend's own conversion, the runnable ones run from the Run button, the template browser lists them.

FLOWMATCH_UPDATE_WORKFLOWS=1 rewrites what these tests compare against from what the
frontend and the server produce: each UI file as the frontend re-saves it, each *_api.json,
and each thumbnail (the run's output image; a picture of the graph for workflows that need
files a user downloads). Review the diff before committing it.
"""

import io
import json
import os
import re
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from comfyui_flowmatch.client.api import ComfyAPI
from comfyui_flowmatch.client.images import SourceImage, upload
from comfyui_flowmatch.client.local_server import PACK_FOLDER_NAME

pytestmark = pytest.mark.browser

WORKFLOWS_DIR = Path(__file__).resolve().parents[2] / "example_workflows"
UI_FILES = sorted(WORKFLOWS_DIR.glob("*.json"))
UPDATE = os.environ.get("FLOWMATCH_UPDATE_WORKFLOWS") == "1"
THUMBNAIL_WIDTH = 256
DISPLAY_SCALE = 8  # the bundled model's 32 px images are upscaled (nearest-exact) before saving
# A widget value naming a model file (a user's download, when absent here).
FILE_NAME = re.compile(r"\.(safetensors|sft|ckpt|pt|pth|bin|gguf)$")


@pytest.fixture(scope="module", autouse=True)
def example_inputs(frontend_server):
    """The images the workflows' Load Image nodes name, in the server's input folder (before any page opens)."""
    for path in sorted((WORKFLOWS_DIR / "inputs").glob("*.png")):
        upload(ComfyAPI(frontend_server.url), SourceImage(path, path.name))


def model_downloads(workflow: dict) -> list[dict]:
    """The `properties.models` entries (name, url, directory) of the workflow's loaders."""
    return [model for node in workflow["nodes"] for model in node.get("properties", {}).get("models", [])]


def api_twin(path: Path) -> Path:
    """"1 Text to image.json" -> api/text_to_image_api.json."""
    slug = re.sub(r"^\d+ ", "", path.stem).lower().replace(" ", "_")
    return path.parent / "api" / f"{slug}_api.json"


def source_size(workflow: dict) -> tuple[int, int]:
    """(width, height) of the workflow's empty latent, or of the input image its Load Image names."""
    for node in workflow["nodes"]:
        if node["type"] == "FlowMatchEmptyLatent":
            return tuple(node["widgets_values"][:2])
    (loader,) = [n for n in workflow["nodes"] if n["type"] == "LoadImage"]
    with Image.open(WORKFLOWS_DIR / "inputs" / loader["widgets_values"][0]) as image:
        return image.size


def read(path: Path) -> dict:
    return json.loads(path.read_text())


# Workflows with download entries need model files a user downloads; the others run on the bundled model.
RUNNABLE = [path for path in UI_FILES if not model_downloads(read(path))]


def write(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def save_thumbnail(image: Image.Image, path: Path) -> None:
    """THUMBNAIL_WIDTH wide; small renders are first enlarged by whole pixels, so they stay crisp."""
    factor = max(1, -(-THUMBNAIL_WIDTH // image.width))
    image = image.convert("RGB").resize((image.width * factor, image.height * factor), Image.NEAREST)
    height = round(image.height * THUMBNAIL_WIDTH / image.width)
    image.resize((THUMBNAIL_WIDTH, height), Image.LANCZOS).save(path, quality=90)


def note_text(workflow: dict) -> str:
    return "\n".join(str(v) for n in workflow["nodes"] if n["type"] in ("Note", "MarkdownNote") for v in n["widgets_values"])


def combo_problems(nodes: dict[str, dict]) -> list[tuple[str, str, object]]:
    """(node, widget, value) for every combo widget whose value is not one of its options."""
    return [
        (node_id, name, widget["value"])
        for node_id, node in nodes.items()
        for name, widget in node["widgets"].items()
        if widget["options"] is not None and widget["value"] not in widget["options"]
    ]


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_workflow_loads_without_errors(comfy_page, path):
    """No missing nodes, no console errors, no dialogs but the Missing Models one; every combo
    value is valid here, except the model files a native workflow names: each of those has a
    download entry (`properties.models`) that the Missing Models dialog offers, and the Note names it."""
    workflow = read(path)
    report = comfy_page.load_workflow(workflow)
    comfy_page.screenshot("loaded")
    assert report.unregistered == []
    assert report.console_errors == []

    absent = combo_problems(report.nodes)
    downloads = model_downloads(workflow)
    if path not in RUNNABLE:
        assert absent, "a native workflow names the user's model files"
        assert {str(value) for _, _, value in absent} == {model["name"] for model in downloads}
        for node_id, name, value in absent:
            assert FILE_NAME.search(str(value)), (node_id, name, value)
            assert str(value) in note_text(workflow), f"the Note does not say where to get {value}"
        (dialog,) = report.dialogs
        assert dialog.startswith("Missing Models"), dialog
        for model in downloads:
            assert model["url"].startswith("https://huggingface.co/") and model["url"].endswith("/" + model["name"])
            assert f"{model['directory']} / {model['name']}" in dialog
        comfy_page.page.keyboard.press("Escape")
    else:
        assert absent == [] and report.dialogs == []

    saved = comfy_page.serialize()
    if UPDATE:
        write(path, saved)
        if path not in RUNNABLE:
            save_thumbnail(Image.open(io.BytesIO(comfy_page.graph_picture())), path.with_suffix(".jpg"))
    assert {k: saved[k] for k in ("nodes", "links", "groups", "version")} == \
        {k: workflow[k] for k in ("nodes", "links", "groups", "version")}, "the file is not what the frontend saves"


@pytest.mark.parametrize("path", RUNNABLE, ids=lambda p: p.stem)
def test_workflow_runs_from_the_page(comfy_page, path):
    """The API twin equals the frontend's conversion; Run finishes and the upscaled image shows."""
    workflow = read(path)
    comfy_page.load_workflow(workflow)
    prompt = comfy_page.graph_to_prompt()
    if UPDATE:
        write(api_twin(path), prompt)
    assert prompt == read(api_twin(path))

    (save_node,) = [n for n in workflow["nodes"] if n["type"] == "SaveImage"]
    shown = comfy_page.run_and_wait_for_image(save_node["id"])
    comfy_page.screenshot("ran")
    subfolder, prefix = save_node["widgets_values"][0].rsplit("/", 1)
    assert f"filename={prefix}_" in shown["srcs"][0] and f"subfolder={subfolder}" in shown["srcs"][0], shown["srcs"]
    width, height = source_size(workflow)
    # compare_solvers and invert_and_reconstruct stitch their images side by side, with 2 px gaps
    panels = 1 + sum(n["type"] == "ImageStitch" for n in workflow["nodes"])
    assert shown["sizes"] == [[DISPLAY_SCALE * (panels * width + 2 * (panels - 1)), DISPLAY_SCALE * height]]
    for edit in (n for n in workflow["nodes"] if n["type"] == "FlowMatchEdit"):
        # the help page's promise: the node shows which update ran, its NFE and the change
        steps, n_max, n_min, n_avg = edit["widgets_values"][2:6]
        text = comfy_page.report_text(edit["id"])
        assert text.startswith(f"FlowEdit (renoised, relaxation 0.5, bound 2): {n_max - n_min} edit steps of "
                               f"{steps}, {n_min} regenerated, {2 * n_avg * (n_max - n_min)} model evaluations (NFE); "
                               "RMS latent change "), text
    if UPDATE:
        with urllib.request.urlopen(shown["srcs"][0], timeout=30) as response:
            save_thumbnail(Image.open(io.BytesIO(response.read())), path.with_suffix(".jpg"))


def test_template_browser_lists_our_workflows(comfy_page):
    """The server lists the UI workflows (not the API twins in api/); the Templates dialog shows
    each with its own thumbnail, and choosing one opens it."""
    listed = comfy_page.server.get_json("/api/workflow_templates")
    assert sorted(listed[PACK_FOLDER_NAME]) == sorted(p.stem for p in UI_FILES)

    page = comfy_page.page
    page.get_by_role("button", name="Templates").click()
    dialog = page.locator("[role=dialog]")
    dialog.get_by_text(PACK_FOLDER_NAME, exact=True).click()
    search = dialog.get_by_placeholder("Search")
    for path in UI_FILES:
        search.fill(path.stem)  # the grid pages in more cards on scroll; a search brings this one up
        thumbnail = dialog.locator(f"[data-testid='template-workflow-{path.stem}'] img").first
        thumbnail.wait_for()
        size = page.wait_for_function(  # the frontend shows a cached blob: copy, so compare sizes
            f"(img) => img.complete && img.naturalWidth === {THUMBNAIL_WIDTH} && [img.naturalWidth, img.naturalHeight]",
            arg=thumbnail.element_handle(), timeout=10_000,
        ).json_value()
        with Image.open(path.with_suffix(".jpg")) as expected:
            assert tuple(size) == expected.size, path.stem
        comfy_page.screenshot(f"template-{path.stem}")
