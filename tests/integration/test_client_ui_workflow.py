"""UI-format workflows: `ui_to_api` against a real server's /object_info, and UI runs equal API runs.

The /object_info snapshot is fetched from a real (plain) ComfyUI and saved once per
module; the hand-made UI workflows use built-in nodes in the shapes frontend 1.32.9
saves: a Reroute, a PrimitiveNode driving a widget input, a bypassed and a muted node,
a Note, KSampler's hidden control_after_generate value and LoadImage's upload value.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from comfyui_flowmatch.client.batch import load_workflow, run_queue
from comfyui_flowmatch.client.runner import QueueSettings
from comfyui_flowmatch.client.ui_to_api import ui_to_api

pytestmark = pytest.mark.integration

WORKFLOWS = Path(__file__).resolve().parents[2] / "example_workflows"
BUNDLED_UI, BUNDLED_API = WORKFLOWS / "1 Text to image.json", WORKFLOWS / "api" / "text_to_image_api.json"
QUIET = QueueSettings(progress=False)


def ui_node(node_id, node_type, widgets=None, inputs=(), outputs=(), mode=0, title=None):
    node = {"id": node_id, "type": node_type, "pos": [0, 0], "size": [200, 100], "flags": {}, "order": node_id,
            "mode": mode, "inputs": [dict(i) for i in inputs], "outputs": [dict(o) for o in outputs],
            "properties": {"Node name for S&R": node_type}, "widgets_values": widgets if widgets is not None else []}
    if title:
        node["title"] = title
    return node


def image_in(link, name="image"):
    return {"name": name, "type": "IMAGE", "link": link}


def image_out(*links):
    return {"name": "IMAGE", "type": "IMAGE", "links": list(links)}


# Canvas -> Reroute -> Blur (radius from a PrimitiveNode) -> bypassed Invert -> Save; plus a Note and a muted node.
RUNNABLE_UI = {
    "id": "0f1e2d3c-0000-4000-8000-000000000001", "revision": 0, "last_node_id": 8, "last_link_id": 6,
    "nodes": [
        ui_node(1, "EmptyImage", [96, 64, 1, 1234567], outputs=[image_out(1)], title="Canvas"),
        ui_node(2, "Reroute", inputs=[{"name": "", "type": "*", "link": 1}], outputs=[{"name": "", "type": "IMAGE", "links": [2]}]),
        ui_node(3, "PrimitiveNode", [3, "fixed"], outputs=[{"name": "INT", "type": "INT", "links": [3], "widget": {"name": "blur_radius"}}]),
        ui_node(4, "ImageBlur", [1, 2.5], inputs=[image_in(2), {"name": "blur_radius", "type": "INT", "widget": {"name": "blur_radius"}, "link": 3}],
                outputs=[image_out(4)], title="Blur"),
        ui_node(5, "ImageInvert", inputs=[image_in(4)], outputs=[image_out(5)], mode=4),
        ui_node(6, "SaveImage", ["ui-twin"], inputs=[image_in(5, "images")]),
        ui_node(7, "Note", ["the client ignores notes"]),
        ui_node(8, "ImageInvert", inputs=[image_in(None)], outputs=[image_out()], mode=2),
    ],
    "links": [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 4, 0, "IMAGE"], [3, 3, 0, 4, 1, "INT"], [4, 4, 0, 5, 0, "IMAGE"],
              [5, 5, 0, 6, 0, "IMAGE"]],
    "groups": [], "config": {}, "extra": {"ds": {"scale": 1, "offset": [0, 0]}}, "version": 0.4,
}

RUNNABLE_API = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 96, "height": 64, "batch_size": 1, "color": 1234567},
          "_meta": {"title": "Canvas"}},
    "4": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 3, "sigma": 2.5}, "_meta": {"title": "Blur"}},
    "6": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "ui-twin"},
          "_meta": {"title": "Save Image"}},
}

# Widget-order rules only (not run): KSampler's hidden control value after `seed`, LoadImage's upload value.
WIDGET_RULES_UI = {
    "nodes": [
        ui_node(1, "KSampler", [42, "randomize", 12, 6.5, "euler", "normal", 0.75],
                inputs=[{"name": n, "type": t, "link": None} for n, t in
                        (("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent_image", "LATENT"))]),
        ui_node(2, "LoadImage", ["example.png", "image"], outputs=[image_out(), {"name": "MASK", "type": "MASK", "links": []}]),
        ui_node(3, "EmptyLatentImage", [64, 48, 2]),
    ],
    "links": [], "version": 0.4,
}


@pytest.fixture(scope="module")
def server(start_comfy_server):
    return start_comfy_server(with_pack=False)


@pytest.fixture(scope="module")
def object_info(server, tmp_path_factory) -> dict:
    """/object_info fetched from the real server, saved as a snapshot file and read back."""
    snapshot = tmp_path_factory.mktemp("object_info") / "object_info.json"
    snapshot.write_text(json.dumps(server.get_json("/object_info")))
    return json.loads(snapshot.read_text())


def schema1(ui: dict) -> dict:
    """The same graph with schema-1 link objects (what later frontends save)."""
    keys = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")
    return {**copy.deepcopy(ui), "version": 1, "links": [dict(zip(keys, link)) for link in ui["links"]]}


def test_ui_to_api_resolves_virtual_bypassed_and_muted_nodes(object_info):
    assert ui_to_api(RUNNABLE_UI, object_info) == RUNNABLE_API
    assert ui_to_api(schema1(RUNNABLE_UI), object_info) == RUNNABLE_API


def test_ui_to_api_skips_control_and_upload_widget_values(object_info):
    prompt = ui_to_api(WIDGET_RULES_UI, object_info)
    assert prompt["1"]["inputs"] == {"seed": 42, "steps": 12, "cfg": 6.5, "sampler_name": "euler",
                                     "scheduler": "normal", "denoise": 0.75}
    assert prompt["2"]["inputs"] == {"image": "example.png"}
    assert prompt["3"]["inputs"] == {"width": 64, "height": 48, "batch_size": 2}


def test_ui_to_api_names_unknown_nodes_and_short_widget_lists(object_info):
    unknown = {"nodes": [ui_node(5, "NoSuchNode", [1])], "links": []}
    with pytest.raises(ValueError, match=r"node 5 has type 'NoSuchNode'.*install the pack"):
        ui_to_api(unknown, object_info)
    short = {"nodes": [ui_node(3, "EmptyLatentImage", [64])], "links": []}
    with pytest.raises(ValueError, match=r"node 3 \(EmptyLatentImage\).*too few for input 'height'"):
        ui_to_api(short, object_info)


def pixels(path: Path) -> bytes:
    with Image.open(path) as image:
        return image.convert("RGB").tobytes()


def test_ui_workflow_runs_like_its_api_twin(server, tmp_path):
    rows = [{"Blur.sigma": 1.5}, {"Blur.sigma": 3.0}]
    ui_run = run_queue(RUNNABLE_UI, rows, tmp_path / "ui", [server.url], seed="5", settings=QUIET)
    api_run = run_queue(RUNNABLE_API, rows, tmp_path / "api", [server.url], seed="5", settings=QUIET)
    assert ui_run.ok and api_run.ok and ui_run.done == api_run.done == 2, ui_run.format() + api_run.format()
    for ui_png in sorted((tmp_path / "ui").glob("*.png")):
        api_png = tmp_path / "api" / ui_png.name
        assert pixels(ui_png) == pixels(api_png)
        with Image.open(io.BytesIO(ui_png.read_bytes())) as image:
            assert json.loads(image.info["workflow"])["nodes"], "the UI run's PNG should embed the UI workflow"
            assert json.loads(image.info["prompt"])["4"]["inputs"]["blur_radius"] == 3


def without_titles(prompt: dict) -> dict:
    return {node_id: {"class_type": node["class_type"], "inputs": node["inputs"]} for node_id, node in prompt.items()}


def test_bundled_ui_workflow_converts_to_its_api_twin(comfy_server):
    info = comfy_server.get_json("/object_info")
    converted, _ = load_workflow(BUNDLED_UI, info)
    twin, _ = load_workflow(BUNDLED_API, info)
    assert without_titles(converted) == without_titles(twin)


def test_bundled_ui_workflow_runs_through_the_client_like_its_api_twin(comfy_server, tmp_path):
    rows = [{"prompt": "a red circle on a blue background"}]
    ui_run = run_queue(BUNDLED_UI, rows, tmp_path / "ui", [comfy_server.url], seed="3", settings=QUIET)
    api_run = run_queue(BUNDLED_API, rows, tmp_path / "api", [comfy_server.url], seed="3", settings=QUIET)
    assert ui_run.ok and api_run.ok, ui_run.format() + "\n" + api_run.format()
    ui_images, api_images = sorted((tmp_path / "ui").glob("*.png")), sorted((tmp_path / "api").glob("*.png"))
    assert [p.name for p in ui_images] == [p.name for p in api_images] and ui_images
    assert all(pixels(a) == pixels(b) for a, b in zip(ui_images, api_images))
