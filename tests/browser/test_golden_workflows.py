"""Workflows saved by the previous release load with the same widget values.

Widget values are saved by position (`widgets_values`); the frontend maps them onto the
node's widgets in input order. tests/fixtures/workflows_golden/ holds the shipped UI
workflows of a release and, in widgets_by_name.json, what each of our nodes showed when
that release loaded them. A node that gains an input must add it last (optional, with a
default) or these values shift onto the wrong inputs.
"""

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "workflows_golden"
GOLDEN_FILES = sorted(GOLDEN_DIR.glob("*.json"))
RECORDED = json.loads((GOLDEN_DIR / "widgets_by_name.json").read_text())
WORKFLOW_FILES = [path for path in GOLDEN_FILES if path.stem in RECORDED]

# Each of our node definitions, changed in the page as a later release might change it.
REDEFINE_OUR_NODES = """async ([position, nodeDefs]) => {
  for (const [name, def] of Object.entries(nodeDefs)) {
    const changed = structuredClone(def);
    if (position === 'last') {
      changed.input.optional = {...(changed.input.optional || {}), added_later: ['INT', {default: 7, tooltip: 'new'}]};
      changed.input_order.optional = [...(changed.input_order.optional || []), 'added_later'];
    } else {
      changed.input.required = {added_first: ['INT', {default: 7, tooltip: 'new'}], ...(changed.input.required || {})};
      changed.input_order.required = ['added_first', ...(changed.input_order.required || [])];
    }
    await window.app.registerNodeDef(name, changed);
  }
}"""


def our_widget_values(nodes: dict[str, dict], recorded: dict[str, dict]) -> dict[str, dict]:
    """{node id: {widget name: value}} for the nodes `recorded` names, restricted to the recorded widgets."""
    return {
        node_id: {name: nodes[node_id]["widgets"].get(name, {}).get("value") for name in expected["widgets"]}
        for node_id, expected in recorded.items()
    }


def recorded_values(stem: str) -> dict[str, dict]:
    return {node_id: node["widgets"] for node_id, node in RECORDED[stem].items()}


def test_golden_set_covers_every_node_in_it():
    assert WORKFLOW_FILES and {path.stem for path in WORKFLOW_FILES} == set(RECORDED)
    for path in WORKFLOW_FILES:
        ours = {str(n["id"]) for n in json.loads(path.read_text())["nodes"] if n["type"].startswith("FlowMatch")}
        assert ours == set(RECORDED[path.stem]), path.name


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.stem)
def test_golden_workflow_loads_with_recorded_widget_values(comfy_page, path):
    report = comfy_page.load_workflow(json.loads(path.read_text()))
    comfy_page.screenshot(path.stem)
    assert report.unregistered == [] and report.console_errors == [], (report.unregistered, report.console_errors)
    assert our_widget_values(report.nodes, RECORDED[path.stem]) == recorded_values(path.stem)


@pytest.fixture(scope="module")
def our_node_defs(frontend_server) -> dict[str, dict]:
    info = frontend_server.get_json("/object_info")
    return {name: node for name, node in info.items() if node["python_module"] == "custom_nodes.comfyui_flowmatch"}


def test_input_added_last_keeps_values_and_one_added_first_shifts_them(comfy_page, our_node_defs):
    """The policy works in this frontend, and the golden check above notices when it is broken."""
    comfy_page.page.evaluate(REDEFINE_OUR_NODES, ["last", our_node_defs])
    for path in WORKFLOW_FILES:
        report = comfy_page.load_workflow(json.loads(path.read_text()))
        assert our_widget_values(report.nodes, RECORDED[path.stem]) == recorded_values(path.stem), path.stem
        assert {node["widgets"]["added_later"]["value"] for node in report.nodes.values()
                if "added_later" in node["widgets"]} == {7}
    comfy_page.screenshot("added-last")

    comfy_page.page.evaluate(REDEFINE_OUR_NODES, ["first", our_node_defs])
    for path in WORKFLOW_FILES:
        report = comfy_page.load_workflow(json.loads(path.read_text()))
        assert our_widget_values(report.nodes, RECORDED[path.stem]) != recorded_values(path.stem), path.stem
    comfy_page.screenshot("added-first")
