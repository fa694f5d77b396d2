"""Static checks on nodes/ that need no ComfyUI: imports that survive ComfyUI's module
names, logging instead of print, and every node registered by the extension."""

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

NODES = Path(__file__).resolve().parents[2] / "nodes"
PACK_SUBPACKAGES = ("nodes", "models", "samplers", "client")


def node_sources():
    return sorted(NODES.glob("*.py"))


@pytest.mark.parametrize("path", node_sources(), ids=lambda p: p.name)
def test_pack_modules_are_imported_relatively(path):
    # Inside a server `nodes`, `models`, `samplers` resolve to ComfyUI's own modules.
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            assert node.module.split(".")[0] not in PACK_SUBPACKAGES + ("comfyui_flowmatch",), (path, node.module)
        if isinstance(node, ast.Import):
            for alias in node.names:
                assert alias.name.split(".")[0] not in PACK_SUBPACKAGES + ("comfyui_flowmatch",), (path, alias.name)


@pytest.mark.parametrize("path", node_sources(), ids=lambda p: p.name)
def test_no_print(path):
    calls = [n for n in ast.walk(ast.parse(path.read_text()))
             if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "print"]
    assert not calls, path


def test_every_node_class_is_in_the_extension_list():
    defined = {m for p in node_sources() for m in re.findall(r"^class (FlowMatch\w+)\(io\.ComfyNode\)", p.read_text(), re.M)}
    listed = set(re.findall(r"^\s+(FlowMatch\w+),$", (NODES / "__init__.py").read_text(), re.M))
    assert defined == listed, (defined, listed)
