"""Convert a UI-format (litegraph) workflow into the API format that POST /prompt accepts.

ComfyUI 0.3.75's server has no converter; the browser's `graphToPrompt` does it. This
module follows the same rules, read from /object_info:

- widget values are consumed in `input_order` (required, then optional); an INT or COMBO
  widget with a "control after generate" widget (the flag set, or unset on inputs named
  `seed`/`noise_seed`) is followed by one hidden value that is skipped; a combo with
  `image_upload` (and the other upload flags) by one upload-widget value;
- a linked input becomes ``[str(origin_id), origin_slot]`` (the link wins over the widget);
- muted nodes (mode 2) are dropped; bypassed nodes (mode 4) pass a matching input through;
- virtual nodes are resolved: Reroute forwards its input, PrimitiveNode gives its value,
  Note/MarkdownNote vanish;
- subgraphs (`definitions.subgraphs`, nested to any depth) are flattened as the frontend's
  `ExecutableNodeDTO` does: an inner node gets the id ``"<instance id>:<inner id>"`` (one
  prefix per level, e.g. ``"12:8:5"``); a link from the subgraph's input node (id -10)
  continues from the instance's matching input outside, or, when that input is not
  linked, takes the instance's promoted widget value (else the inner widget's own value);
  a link from the instance's output continues from what feeds the subgraph's output node
  (id -20) at that slot. The instance itself is not a node of the prompt.
Links may be the 0.4 top-level arrays or schema-1 objects (subgraph definitions use those).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MODE_MUTED = 2
MODE_BYPASSED = 4
COMMENT_NODES = frozenset({"Note", "MarkdownNote"})
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload", "mesh_upload")
AUTO_CONTROL_INPUTS = frozenset({"seed", "noise_seed"})
SUBGRAPH_INPUT_NODE = -10
SUBGRAPH_OUTPUT_NODE = -20

Source = tuple[str, int] | tuple[None, Any]  # (execution id, output slot) or (None, literal value)


@dataclass(frozen=True)
class _Scope:
    """One graph level: the root, or one subgraph instance's copy of its definition."""

    path: tuple[str, ...]  # instance ids from the root down to this level
    nodes: dict[int, dict]
    links: dict[int, dict]
    instance: dict | None = None  # the subgraph node (in `parent`) this level expands
    parent: "_Scope | None" = None

    def execution_id(self, node_id: int) -> str:
        return ":".join((*self.path, str(node_id)))


def ui_to_api(ui_workflow: dict, object_info: dict[str, dict]) -> dict[str, dict]:
    """The API-format prompt for `ui_workflow`, with node types described by `object_info`.

    Args:
        ui_workflow: a workflow as the frontend saves it (``{"nodes": [...], "links": [...]}``,
            with ``definitions.subgraphs`` when it holds subgraphs).
        object_info: the server's GET /object_info answer.

    Returns:
        ``{node_id: {"class_type", "inputs", "_meta": {"title"}}}`` for every active node;
        nodes inside subgraphs get ``"<instance id>:<node id>"`` ids, as the frontend posts them.

    Raises:
        ValueError: a node type the server does not know, a subgraph that contains itself, or
            widget values that do not fit the node's inputs; the message names the node.
    """
    converter = _Converter(_subgraph_definitions(ui_workflow), object_info)
    root = _Scope((), _nodes_by_id(ui_workflow), _links_by_id(ui_workflow.get("links", [])))
    converter.convert(root)
    return converter.prompt


def _subgraph_definitions(workflow: dict) -> dict[str, dict]:
    """Every subgraph definition by id: the workflow's, and any a definition itself carries."""
    found: dict[str, dict] = {}
    pending = list((workflow.get("definitions") or {}).get("subgraphs", []))
    while pending:
        definition = pending.pop()
        if definition.get("id") not in found:
            found[definition["id"]] = definition
            pending.extend((definition.get("definitions") or {}).get("subgraphs", []))
    return found


def _nodes_by_id(graph: dict) -> dict[int, dict]:
    return {node["id"]: node for node in graph.get("nodes", [])}


def _links_by_id(links: list) -> dict[int, dict]:
    """Both link layouts as ``{id: {origin_id, origin_slot, target_id, target_slot, type}}``."""
    keys = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")
    table = {}
    for link in links:
        entry = dict(zip(keys, link)) if isinstance(link, list) else link
        table[entry["id"]] = entry
    return table


class _Converter:
    """Walks the root graph and every subgraph instance, emitting executable nodes."""

    def __init__(self, subgraphs: dict[str, dict], object_info: dict[str, dict]):
        self.subgraphs = subgraphs
        self.object_info = object_info
        self.prompt: dict[str, dict] = {}

    def convert(self, scope: _Scope) -> None:
        for node_id, node in scope.nodes.items():
            node_type = node.get("type")
            if node_type in self.subgraphs:
                self.convert(self._inner_scope(scope, node))
                continue
            if node.get("mode") in (MODE_MUTED, MODE_BYPASSED) or node_type in COMMENT_NODES | {"Reroute", "PrimitiveNode"}:
                continue
            execution_id = scope.execution_id(node_id)
            if node_type not in self.object_info:
                raise ValueError(
                    f"node {execution_id} has type {node_type!r}, which the server does not know: "
                    "install the pack that provides it"
                )
            inputs = _widget_inputs(node, self.object_info[node_type], execution_id)
            for slot_index, slot in enumerate(node.get("inputs") or []):
                source = self._resolve_input(scope, node, slot_index, frozenset())
                if source is not None:
                    origin, value = source
                    inputs[slot["name"]] = value if origin is None else [origin, value]
            self.prompt[execution_id] = {
                "class_type": node_type,
                "inputs": inputs,
                "_meta": {"title": node.get("title") or self.object_info[node_type].get("display_name") or node_type},
            }

    def _inner_scope(self, scope: _Scope, instance: dict) -> _Scope:
        path = (*scope.path, str(instance["id"]))
        ancestors, level = [], scope
        while level.instance is not None:
            ancestors.append(level.instance.get("type"))
            level = level.parent
        if instance["type"] in ancestors:
            raise ValueError(f"node {':'.join(path)}: subgraph {instance['type']} contains itself")
        definition = self.subgraphs[instance["type"]]
        return _Scope(path, _nodes_by_id(definition), _links_by_id(definition.get("links", [])), instance, scope)

    def _resolve_input(self, scope: _Scope, node: dict, slot: int, seen: frozenset) -> Source | None:
        """Where input `slot` of `node` really comes from; None when nothing (or a muted node) feeds it."""
        inputs = node.get("inputs") or []
        link = scope.links.get(inputs[slot].get("link")) if slot < len(inputs) else None
        key = (scope.path, link and link["id"])
        if link is None or key in seen:
            return None
        seen = seen | {key}
        if link["origin_id"] == SUBGRAPH_INPUT_NODE and scope.instance is not None:
            return self._resolve_subgraph_input(scope, link["origin_slot"], seen)
        origin = scope.nodes.get(link["origin_id"])
        return None if origin is None else self._resolve_output(scope, origin, link["origin_slot"], link.get("type"), seen)

    def _resolve_subgraph_input(self, scope: _Scope, slot: int, seen: frozenset) -> Source | None:
        """Input `slot` of the instance that `scope` expands: its link outside, else its promoted widget."""
        instance = scope.instance
        instance_inputs = instance.get("inputs") or []
        if slot >= len(instance_inputs):
            return None
        if instance_inputs[slot].get("link") is not None:
            return self._resolve_input(scope.parent, instance, slot, seen)
        widget_inputs = [index for index, entry in enumerate(instance_inputs) if entry.get("widget")]
        values = instance.get("widgets_values")
        if slot in widget_inputs and isinstance(values, list) and widget_inputs.index(slot) < len(values):
            return None, values[widget_inputs.index(slot)]
        return None

    def _resolve_output(
        self, scope: _Scope, node: dict, slot: int, link_type: str | None, seen: frozenset
    ) -> Source | None:
        """What output `slot` of `node` stands for after bypasses, virtual nodes and subgraphs."""
        if node.get("mode") == MODE_BYPASSED:
            through = _bypass_input(node, slot, link_type)
            return None if through is None else self._resolve_input(scope, node, through, seen)
        if node.get("type") in self.subgraphs:
            inner = self._inner_scope(scope, node)
            feeding = [link for link in inner.links.values()
                       if link["target_id"] == SUBGRAPH_OUTPUT_NODE and link["target_slot"] == slot]
            origin = inner.nodes.get(feeding[0]["origin_id"]) if feeding else None
            if origin is None:
                return None
            return self._resolve_output(inner, origin, feeding[0]["origin_slot"], link_type, seen)
        if node.get("mode") == MODE_MUTED:
            return None
        if node["type"] == "PrimitiveNode":
            return None, (node.get("widgets_values") or [None])[0]
        if node["type"] == "Reroute":
            return self._resolve_input(scope, node, 0, seen)
        return scope.execution_id(node["id"]), slot


def _bypass_input(node: dict, output_slot: int, link_type: str | None) -> int | None:
    """The input a bypassed node passes to output `output_slot`: the same index if its type fits, else the first of that type."""
    inputs = node.get("inputs") or []
    outputs = node.get("outputs") or []
    wanted = link_type or (outputs[output_slot].get("type") if output_slot < len(outputs) else None)
    if output_slot < len(inputs) and inputs[output_slot].get("type") == wanted:
        return output_slot
    return next((i for i, slot in enumerate(inputs) if slot.get("type") == wanted), None)


def _widget_inputs(node: dict, info: dict, execution_id: str) -> dict[str, Any]:
    """The node's widget values keyed by input name, following the rules in the module docstring."""
    values = node.get("widgets_values")
    if values is None:
        return {}
    specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
    order = info.get("input_order") or {section: list(info["input"].get(section, {})) for section in ("required", "optional")}
    names = [name for section in ("required", "optional") for name in order.get(section, [])]
    if isinstance(values, dict):
        return {name: values[name] for name in names if name in values and _is_widget(specs.get(name))}
    inputs: dict[str, Any] = {}
    position = 0
    for name in names:
        spec = specs.get(name)
        if not _is_widget(spec):
            continue
        if position >= len(values):
            if name in order.get("optional", []):
                continue  # an input added to the node after the workflow was saved: the server's default applies
            raise ValueError(
                f"node {execution_id} ({node['type']}): widgets_values has {len(values)} values, too few for input "
                f"{name!r}; re-save the workflow with this server's version of the node"
            )
        inputs[name] = values[position]
        position += 1 + _extra_widget_values(name, spec)
    return inputs


def _is_widget(spec: list | None) -> bool:
    if not spec:
        return False
    kind = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput")


def _extra_widget_values(name: str, spec: list) -> int:
    """Hidden values the frontend stores after this widget's own value."""
    kind = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    control = options.get("control_after_generate")
    is_combo = isinstance(kind, list) or kind == "COMBO"
    extra = 0
    if kind == "INT" and (control or (control is None and name in AUTO_CONTROL_INPUTS)):
        extra += 1
    elif is_combo and control:
        extra += 1
    if is_combo and any(options.get(flag) for flag in UPLOAD_FLAGS):
        extra += 1
    return extra
