"""ui_to_api on workflows saved before a node gained an input (new inputs go last, optional)."""

import pytest

from comfyui_flowmatch.client.ui_to_api import ui_to_api

pytestmark = pytest.mark.unit

# The shape of /object_info for one node whose newest input is optional.
OBJECT_INFO = {
    "Blur": {
        "input": {
            "required": {"image": ["IMAGE", {}], "radius": ["INT", {"default": 1}]},
            "optional": {"sigma": ["FLOAT", {"default": 1.0}]},
        },
        "input_order": {"required": ["image", "radius"], "optional": ["sigma"]},
        "output": ["IMAGE"],
    },
}


def workflow(widgets_values):
    node = {"id": 1, "type": "Blur", "mode": 0, "inputs": [], "outputs": [], "widgets_values": widgets_values}
    return {"nodes": [node], "links": [], "version": 0.4}


def test_a_missing_trailing_optional_value_takes_the_servers_default():
    assert ui_to_api(workflow([3]), OBJECT_INFO)["1"]["inputs"] == {"radius": 3}
    assert ui_to_api(workflow([3, 0.5]), OBJECT_INFO)["1"]["inputs"] == {"radius": 3, "sigma": 0.5}


def test_a_missing_required_value_is_still_an_error():
    with pytest.raises(ValueError, match="too few for input 'radius'"):
        ui_to_api(workflow([]), OBJECT_INFO)
