"""The browser harness itself, on built-in nodes only: if these fail, the pack is not to blame."""

import pytest

pytestmark = pytest.mark.browser

# EmptyImage -> SaveImage, as the frontend saves it (UI format, version 0.4).
BUILTIN_WORKFLOW = {
    "last_node_id": 2, "last_link_id": 1,
    "nodes": [
        {"id": 1, "type": "EmptyImage", "pos": [50, 50], "size": [300, 130], "flags": {}, "order": 0, "mode": 0,
         "inputs": [], "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}],
         "properties": {"Node name for S&R": "EmptyImage"}, "widgets_values": [48, 32, 1, 16711680]},
        {"id": 2, "type": "SaveImage", "pos": [400, 50], "size": [300, 300], "flags": {}, "order": 1, "mode": 0,
         "inputs": [{"name": "images", "type": "IMAGE", "link": 1}], "outputs": [],
         "properties": {"Node name for S&R": "SaveImage"}, "widgets_values": ["harness"]},
    ],
    "links": [[1, 1, 0, 2, 0, "IMAGE"]], "groups": [], "config": {}, "extra": {}, "version": 0.4,
}


def test_builtin_workflow_loads_converts_and_runs(comfy_page):
    report = comfy_page.load_workflow(BUILTIN_WORKFLOW)
    comfy_page.screenshot("loaded")
    assert report.dialogs == [] and report.console_errors == [] and report.unregistered == []
    assert report.nodes["1"]["widgets"]["width"]["value"] == 48

    assert comfy_page.graph_to_prompt() == {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 48, "height": 32, "batch_size": 1, "color": 16711680},
              "_meta": {"title": "EmptyImage"}},
        "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "harness", "images": ["1", 0]},
              "_meta": {"title": "Save Image"}},
    }

    shown = comfy_page.run_and_wait_for_image(2)
    comfy_page.screenshot("ran")
    assert shown["sizes"] == [[48, 32]]
    assert "filename=harness_" in shown["srcs"][0]


def test_missing_node_is_reported(comfy_page):
    workflow = {**BUILTIN_WORKFLOW, "nodes": [{**BUILTIN_WORKFLOW["nodes"][0], "type": "NoSuchNode"},
                                              BUILTIN_WORKFLOW["nodes"][1]]}
    report = comfy_page.load_workflow(workflow)
    comfy_page.screenshot("missing")
    assert report.unregistered == ["NoSuchNode"]
    assert any("NoSuchNode" in dialog and "missing" in dialog.lower() for dialog in report.dialogs), report.dialogs
