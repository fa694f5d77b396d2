"""ui_to_api flattens subgraphs by the frontend's rules (ExecutableNodeDTO in frontend 1.32.9):
inner ids `<instance>:<node>`, subgraph inputs continue outside the instance (a link, else the
instance's promoted widget), subgraph outputs continue from what feeds the output node.
The browser test tests/browser/test_subgraph_workflow.py checks a frontend-saved nested
subgraph against the frontend's own conversion; these cover what one saved graph cannot."""

import copy

import pytest

from comfyui_flowmatch.client.ui_to_api import ui_to_api

pytestmark = pytest.mark.unit

OBJECT_INFO = {
    "Load": {"input": {"required": {}}, "input_order": {"required": []}, "output": ["MODEL"]},
    "Encode": {
        "input": {"required": {"model": ["MODEL", {}], "text": ["STRING", {}]}},
        "input_order": {"required": ["model", "text"]}, "output": ["COND"],
    },
    "Shift": {"input": {"required": {"cond": ["COND", {}]}}, "input_order": {"required": ["cond"]}, "output": ["COND"]},
    "Sink": {"input": {"required": {"cond": ["COND", {}]}}, "input_order": {"required": ["cond"]}, "output": []},
}
SUBGRAPH_ID = "5f0c6a52-0d7e-4c1f-9a39-3a1f3c1b2d10"


def node(node_id, node_type, inputs=(), widgets_values=None, mode=0):
    return {"id": node_id, "type": node_type, "mode": mode, "inputs": [dict(slot) for slot in inputs],
            "outputs": [], "widgets_values": widgets_values}


def encoder_subgraph(bypassed_shift: bool = False) -> dict:
    """Subgraph: (model, text) -> Encode [-> bypassed Shift] -> COND, in schema-1 link objects."""
    nodes = [node(1, "Encode", [{"name": "model", "type": "MODEL", "link": 1},
                                {"name": "text", "type": "STRING", "widget": {"name": "text"}, "link": 2}], ["inner"])]
    links = [
        {"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0, "type": "MODEL"},
        {"id": 2, "origin_id": -10, "origin_slot": 1, "target_id": 1, "target_slot": 1, "type": "STRING"},
    ]
    if bypassed_shift:
        nodes.append(node(2, "Shift", [{"name": "cond", "type": "COND", "link": 3}], [], mode=4))
        links += [{"id": 3, "origin_id": 1, "origin_slot": 0, "target_id": 2, "target_slot": 0, "type": "COND"},
                  {"id": 4, "origin_id": 2, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "COND"}]
    else:
        links.append({"id": 3, "origin_id": 1, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "COND"})
    return {"id": SUBGRAPH_ID, "version": 1, "name": "encode", "nodes": nodes, "links": links,
            "inputNode": {"id": -10}, "outputNode": {"id": -20},
            "inputs": [{"name": "model", "type": "MODEL"}, {"name": "text", "type": "STRING"}],
            "outputs": [{"name": "COND", "type": "COND"}]}


def instance(node_id, model_link, text, text_link=None):
    """A subgraph node whose `text` input is promoted to a widget holding `text`."""
    return node(node_id, SUBGRAPH_ID, [{"name": "model", "type": "MODEL", "link": model_link},
                                       {"name": "text", "type": "STRING", "widget": {"name": "text"}, "link": text_link}],
                [text])


def two_instances(definition: dict) -> dict:
    """Root: Load(1) feeds two instances (2, 3) of one subgraph, each read by a Sink (4, 5)."""
    return {
        "version": 0.4,
        "nodes": [node(1, "Load", [], []), instance(2, 1, "first"), instance(3, 2, "second"),
                  node(4, "Sink", [{"name": "cond", "type": "COND", "link": 3}], []),
                  node(5, "Sink", [{"name": "cond", "type": "COND", "link": 4}], [])],
        "links": [[1, 1, 0, 2, 0, "MODEL"], [2, 1, 0, 3, 0, "MODEL"], [3, 2, 0, 4, 0, "COND"], [4, 3, 0, 5, 0, "COND"]],
        "definitions": {"subgraphs": [definition]},
    }


def inputs_by_id(prompt):
    return {node_id: (entry["class_type"], entry["inputs"]) for node_id, entry in prompt.items()}


def test_each_instance_gets_its_own_ids_and_promoted_widget_value():
    assert inputs_by_id(ui_to_api(two_instances(encoder_subgraph()), OBJECT_INFO)) == {
        "1": ("Load", {}),
        "2:1": ("Encode", {"model": ["1", 0], "text": "first"}),
        "3:1": ("Encode", {"model": ["1", 0], "text": "second"}),
        "4": ("Sink", {"cond": ["2:1", 0]}),
        "5": ("Sink", {"cond": ["3:1", 0]}),
    }


def test_a_linked_instance_input_wins_over_its_widget_and_follows_primitives_outside():
    workflow = two_instances(encoder_subgraph())
    workflow["nodes"].append(node(6, "PrimitiveNode", [], ["from a primitive"]))
    workflow["nodes"][2]["inputs"][1]["link"] = 5
    workflow["links"].append([5, 6, 0, 3, 1, "STRING"])
    assert ui_to_api(workflow, OBJECT_INFO)["3:1"]["inputs"]["text"] == "from a primitive"


def test_an_unpromoted_unlinked_input_keeps_the_inner_widget_value():
    workflow = two_instances(encoder_subgraph())
    for entry in workflow["nodes"][1:3]:
        del entry["inputs"][1]["widget"]
        entry["widgets_values"] = []
    prompt = ui_to_api(workflow, OBJECT_INFO)
    assert prompt["2:1"]["inputs"]["text"] == prompt["3:1"]["inputs"]["text"] == "inner"


def test_a_bypassed_node_inside_passes_its_input_to_the_subgraph_output():
    prompt = ui_to_api(two_instances(encoder_subgraph(bypassed_shift=True)), OBJECT_INFO)
    assert "2:2" not in prompt and prompt["4"]["inputs"] == {"cond": ["2:1", 0]}


def test_nested_instances_prefix_every_level():
    inner = encoder_subgraph()
    outer = {"id": "outer", "version": 1, "name": "outer", "inputNode": {"id": -10}, "outputNode": {"id": -20},
             "nodes": [node(7, "Load", [], []), instance(8, 1, "nested")],
             "links": [{"id": 1, "origin_id": 7, "origin_slot": 0, "target_id": 8, "target_slot": 0, "type": "MODEL"},
                       {"id": 2, "origin_id": 8, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "COND"}]}
    workflow = {"version": 0.4, "nodes": [node(9, "outer", [], []),
                                          node(4, "Sink", [{"name": "cond", "type": "COND", "link": 1}], [])],
                "links": [[1, 9, 0, 4, 0, "COND"]], "definitions": {"subgraphs": [outer, inner]}}
    assert inputs_by_id(ui_to_api(workflow, OBJECT_INFO)) == {
        "9:7": ("Load", {}),
        "9:8:1": ("Encode", {"model": ["9:7", 0], "text": "nested"}),
        "4": ("Sink", {"cond": ["9:8:1", 0]}),
    }


def test_a_subgraph_that_contains_itself_is_refused():
    definition = encoder_subgraph()
    definition["nodes"].append(copy.deepcopy(instance(5, None, "loop")))
    with pytest.raises(ValueError, match="contains itself"):
        ui_to_api(two_instances(definition), OBJECT_INFO)


def test_an_unknown_node_inside_a_subgraph_is_named_by_its_path():
    definition = encoder_subgraph()
    definition["nodes"][0]["type"] = "NotInstalled"
    with pytest.raises(ValueError, match=r"node 2:1 has type 'NotInstalled'"):
        ui_to_api(two_instances(definition), OBJECT_INFO)
