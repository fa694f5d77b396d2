"""The pack loads into a real ComfyUI server and describes every node and input."""

import pytest

pytestmark = pytest.mark.integration

EXPECTED_NODES = {
    "FlowMatchModelLoader",
    "FlowMatchTextEncode",
    "FlowMatchEmptyLatent",
    "FlowMatchSampler",
    "FlowMatchODESampler",
    "FlowMatchScheduler",
    "FlowMatchInvert",
    "FlowMatchEdit",
}


def test_nodes_registered_with_descriptions_and_tooltips(comfy_server):
    info = comfy_server.get_json("/object_info")
    ours = {name: node for name, node in info.items() if node["python_module"] == "custom_nodes.comfyui_flowmatch"}
    assert EXPECTED_NODES <= set(ours), sorted(ours)
    for name, node in ours.items():
        assert name.startswith("FlowMatch"), name
        assert node["category"].startswith("flow_matching"), (name, node["category"])
        assert node["description"], name
        assert node["display_name"], name
        for section in ("required", "optional"):
            for input_name, spec in node["input"].get(section, {}).items():
                options = spec[1] if len(spec) > 1 else {}
                assert options.get("tooltip"), f"{name}.{input_name} has no tooltip"


def test_pack_import_logged_without_failure(comfy_server):
    import_lines = [line for line in comfy_server.log().splitlines() if line.rstrip().endswith("/comfyui_flowmatch")]
    assert import_lines, "ComfyUI did not list the pack among its custom nodes"
    assert not any("IMPORT FAILED" in line for line in import_lines), import_lines
