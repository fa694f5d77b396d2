"""Saved workflows of the previous release still map onto the same inputs (server side).

A UI workflow stores widget values by position. Today's /object_info input order, read
with the frontend's rule, must put each golden value on the input it was saved for
(tests/fixtures/workflows_golden/widgets_by_name.json). The browser test
tests/browser/test_golden_workflows.py checks the same in the real frontend.
"""

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "workflows_golden"
RECORDED = json.loads((GOLDEN_DIR / "widgets_by_name.json").read_text())
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL = None  # the frontend's hidden "control after generate" value takes a position too


def widget_slots(node_def: dict) -> list[str | None]:
    """Input names in the order their values sit in `widgets_values` (frontend 1.32.9's rule)."""
    slots: list[str | None] = []
    for section in ("required", "optional"):
        for name in node_def["input_order"].get(section, []):
            kind, *rest = node_def["input"][section][name]
            options = rest[0] if rest else {}
            if options.get("forceInput") or not (isinstance(kind, list) or kind in WIDGET_TYPES):
                continue
            slots.append(name)
            seed_like = kind == "INT" and name in ("seed", "noise_seed")
            if options.get("control_after_generate", seed_like):
                slots.append(CONTROL)
    return slots


@pytest.fixture(scope="module")
def object_info(comfy_server) -> dict:
    return comfy_server.get_json("/object_info")


def golden_nodes(stem: str) -> list[tuple[dict, dict]]:
    """(saved node, recorded widgets) for each of our nodes in one golden workflow."""
    nodes = {str(node["id"]): node for node in json.loads((GOLDEN_DIR / f"{stem}.json").read_text())["nodes"]}
    return [(nodes[node_id], recorded) for node_id, recorded in RECORDED[stem].items()]


@pytest.mark.parametrize("stem", sorted(RECORDED))
def test_golden_values_map_to_the_recorded_inputs(object_info, stem):
    for node, recorded in golden_nodes(stem):
        assert node["type"] == recorded["type"] and node["type"] in object_info, (stem, node["id"])
        mapped = dict(zip(widget_slots(object_info[node["type"]]), node["widgets_values"]))
        mapped.pop(CONTROL, None)
        assert mapped == recorded["widgets"], (stem, node["id"], node["type"])


@pytest.mark.parametrize("stem", sorted(RECORDED))
def test_inputs_added_since_are_optional_with_defaults(object_info, stem):
    for node, recorded in golden_nodes(stem):
        node_def = object_info[node["type"]]
        saved = set(recorded["widgets"]) | {slot["name"] for slot in node.get("inputs", [])}
        assert [name for name in node_def["input_order"]["required"] if name not in saved] == [], node["type"]
        for name in node_def["input_order"].get("optional", []):
            kind, *rest = node_def["input"]["optional"][name]
            if name not in saved and (isinstance(kind, list) or kind in WIDGET_TYPES):
                assert "default" in (rest[0] if rest else {}), f"{node['type']}.{name} has no default"
