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

pytestmark = pytest.mark.browser

WORKFLOWS_DIR = Path(__file__).resolve().parents[2] / "workflows"
UI_FILES = sorted(WORKFLOWS_DIR.glob("*.json"))
# native_* workflows need model files a user downloads; the others run on the bundled model.
RUNNABLE = [path for path in UI_FILES if not path.stem.startswith("native_")]
UPDATE = os.environ.get("FLOWMATCH_UPDATE_WORKFLOWS") == "1"
THUMBNAIL_WIDTH = 256
# A widget value naming a model file (a user's download, when absent here).
FILE_NAME = re.compile(r"\.(safetensors|sft|ckpt|pt|pth|bin|gguf)$")


def read(path: Path) -> dict:
    return json.loads(path.read_text())


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
    """No missing nodes, no dialogs, no console errors; every combo value is valid here, except
    the model files a native_* workflow names, and each of those is named in its Note."""
    workflow = read(path)
    report = comfy_page.load_workflow(workflow)
    comfy_page.screenshot("loaded")
    assert report.unregistered == []
    assert report.dialogs == []
    assert report.console_errors == []

    absent = combo_problems(report.nodes)
    if path not in RUNNABLE:
        assert absent, "a native workflow names the user's model files"
        for node_id, name, value in absent:
            assert FILE_NAME.search(str(value)), (node_id, name, value)
            assert str(value) in note_text(workflow), f"the Note does not say where to get {value}"
    else:
        assert absent == []

    saved = comfy_page.serialize()
    if UPDATE:
        write(path, saved)
        if path not in RUNNABLE:
            save_thumbnail(Image.open(io.BytesIO(comfy_page.graph_picture())), path.with_suffix(".jpg"))
    assert {k: saved[k] for k in ("nodes", "links", "groups", "version")} == \
        {k: workflow[k] for k in ("nodes", "links", "groups", "version")}, "the file is not what the frontend saves"


@pytest.mark.parametrize("path", RUNNABLE, ids=lambda p: p.stem)
def test_workflow_runs_from_the_page(comfy_page, path):
    """The *_api.json twin equals the frontend's conversion; Run finishes and the image shows."""
    workflow = read(path)
    comfy_page.load_workflow(workflow)
    api_path = path.parent / "api" / f"{path.stem}_api.json"
    prompt = comfy_page.graph_to_prompt()
    if UPDATE:
        write(api_path, prompt)
    assert prompt == read(api_path)

    (save_node,) = [n for n in workflow["nodes"] if n["type"] == "SaveImage"]
    shown = comfy_page.run_and_wait_for_image(save_node["id"])
    comfy_page.screenshot("ran")
    subfolder, prefix = save_node["widgets_values"][0].rsplit("/", 1)
    assert f"filename={prefix}_" in shown["srcs"][0] and f"subfolder={subfolder}" in shown["srcs"][0], shown["srcs"]
    if path.stem == "compare_solvers":  # five 32 px images, stitched with 2 px gaps
        assert shown["sizes"] == [[5 * 32 + 4 * 2, 32]]
    if UPDATE:
        with urllib.request.urlopen(shown["srcs"][0], timeout=30) as response:
            save_thumbnail(Image.open(io.BytesIO(response.read())), path.with_suffix(".jpg"))


def test_template_browser_lists_our_workflows(comfy_page):
    """The server lists every .json in workflows/; the Templates dialog shows each UI workflow
    with its own thumbnail, and choosing one opens it."""
    listed = comfy_page.server.get_json("/api/workflow_templates")
    assert sorted(listed["comfyui_flowmatch"]) == sorted(p.stem for p in WORKFLOWS_DIR.glob("*.json"))

    page = comfy_page.page
    page.get_by_role("button", name="Templates").click()
    dialog = page.locator("[role=dialog]")
    dialog.get_by_text("comfyui_flowmatch", exact=True).click()
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

    first = UI_FILES[0]
    search.fill(first.stem)
    dialog.locator(f"[data-testid='template-workflow-{first.stem}']").click()
    page.wait_for_function("(n) => window.app.graph.nodes.length === n", arg=len(read(first)["nodes"]))
    comfy_page.screenshot("opened")
    assert sorted(n["type"] for n in comfy_page.serialize()["nodes"]) == sorted(n["type"] for n in read(first)["nodes"])
