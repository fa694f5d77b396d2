"""A workflow with nested subgraphs, made and saved by the real frontend, runs through the
client exactly as the frontend runs it.

In the page: the text_to_image workflow's two encoders and sampler become a subgraph
(Convert to Subgraph), the positive prompt's text is promoted to a widget on the subgraph
node and changed there, and that subgraph node with the empty latent becomes a second,
outer subgraph. The saved workflow then goes through `ui_to_api` (compared with the
frontend's own `graphToPrompt`) and `run_queue` on a second server; its image must equal
the one the frontend's Run button made.
"""

import json
import urllib.parse
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comfyui_flowmatch.client.batch import run_queue
from comfyui_flowmatch.client.ui_to_api import ui_to_api

pytestmark = pytest.mark.browser

WORKFLOW = Path(__file__).resolve().parents[1] / "fixtures" / "workflows_golden" / "text_to_image.json"
PROMOTED_PROMPT = "a blue square on a gray background"  # differs from the workflow's own prompt
SAVE_IMAGE = 7
CONVERT = """async (ids) => {
  const canvas = window.app.canvas; canvas.deselectAll();
  for (const id of ids) canvas.select(window.app.graph.getNodeById(id));
  await window.app.extensionManager.command.execute('Comfy.Graph.ConvertToSubgraph');
  canvas.deselectAll();  // Fit View fits the selection: keep SaveImage in view so its image loads
  return window.app.graph.nodes.filter((n) => n.isSubgraphNode?.()).map((n) => n.id);
}"""
# Link the inner positive encoder's `text` to a new subgraph input (the drag onto the input
# node's empty slot), then set the widget this promotes on the subgraph node.
PROMOTE_TEXT = """([instanceId, innerId, value]) => {
  const instance = window.app.graph.getNodeById(instanceId);
  const inner = instance.subgraph.getNodeById(innerId);
  instance.subgraph.inputNode.emptySlot.connect(inner.inputs.find((i) => i.name === 'text'), inner);
  const widget = instance.widgets.find((w) => w.name === 'text');
  widget.value = value;
  return instance.widgets.map((w) => w.name);
}"""


def without_meta(prompt: dict) -> dict:
    return {node_id: {"class_type": node["class_type"], "inputs": node["inputs"]} for node_id, node in prompt.items()}


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(BytesIO(png)).convert("RGB"))


@pytest.fixture(scope="module")
def client_server(start_comfy_server):
    """A second server for the client's run, so nothing is served from the first one's cache."""
    return start_comfy_server()


def test_nested_subgraph_workflow_runs_through_the_client_like_the_frontend(comfy_page, client_server, tmp_path):
    comfy_page.load_workflow(json.loads(WORKFLOW.read_text()))
    (inner_instance,) = comfy_page.page.evaluate(CONVERT, [2, 3, 5])
    assert "text" in comfy_page.page.evaluate(PROMOTE_TEXT, [inner_instance, 2, PROMOTED_PROMPT])
    (outer_instance,) = comfy_page.page.evaluate(CONVERT, [inner_instance, 4])
    comfy_page.screenshot("nested-subgraph")

    saved = comfy_page.serialize()
    definitions = saved["definitions"]["subgraphs"]
    assert len(definitions) == 2
    assert any(node["type"] in {d["id"] for d in definitions} for d in definitions for node in d["nodes"]), "not nested"
    frontend_prompt = comfy_page.graph_to_prompt()
    assert frontend_prompt[f"{outer_instance}:{inner_instance}:2"]["inputs"]["text"] == PROMOTED_PROMPT

    ours = ui_to_api(saved, client_server.api.object_info())
    assert without_meta(ours) == without_meta(frontend_prompt)

    shown = comfy_page.run_and_wait_for_image(SAVE_IMAGE)
    query = urllib.parse.urlsplit(shown["srcs"][0]).query
    params = {key: values[0] for key, values in urllib.parse.parse_qs(query).items()}
    frontend_png = comfy_page.server.api.view(params["filename"], params.get("subfolder", ""), params.get("type", "output"))

    summary = run_queue(saved, [{"name": "subgraph"}], tmp_path, [client_server.url], seed="42")
    assert summary.ok and summary.done == 1, summary.format()
    (client_png,) = tmp_path.glob("subgraph-42*.png")
    np.testing.assert_array_equal(pixels(client_png.read_bytes()), pixels(frontend_png))
