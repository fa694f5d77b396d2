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
  Note/MarkdownNote vanish.
Links may be the 0.4 top-level arrays or schema-1 objects.
"""

from __future__ import annotations

from typing import Any

MODE_MUTED = 2
MODE_BYPASSED = 4
COMMENT_NODES = frozenset({"Note", "MarkdownNote"})
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload", "mesh_upload")
AUTO_CONTROL_INPUTS = frozenset({"seed", "noise_seed"})

Link = tuple[int, int]  # (origin node id, origin slot)


def ui_to_api(ui_workflow: dict, object_info: dict[str, dict]) -> dict[str, dict]:
    """The API-format prompt for `ui_workflow`, with node types described by `object_info`.

    Args:
        ui_workflow: a workflow as the frontend saves it (``{"nodes": [...], "links": [...]}``).
        object_info: the server's GET /object_info answer.

    Returns:
        ``{node_id: {"class_type", "inputs", "_meta": {"title"}}}`` for every active node.

    Raises:
        ValueError: a node type the server does not know, a subgraph, or widget values that
            do not fit the node's inputs; the message names the node.
    """
    nodes = {node["id"]: node for node in ui_workflow.get("nodes", [])}
    links = _links_by_id(ui_workflow.get("links", []))
    subgraphs = {sub.get("id") for sub in (ui_workflow.get("definitions") or {}).get("subgraphs", [])}
    prompt: dict[str, dict] = {}
    for node_id, node in nodes.items():
        node_type = node.get("type")
        if node.get("mode") in (MODE_MUTED, MODE_BYPASSED) or node_type in COMMENT_NODES | {"Reroute", "PrimitiveNode"}:
            continue
        if node_type in subgraphs:
            raise ValueError(f"node {node_id} is a subgraph ({node_type}): unpack it in the editor, subgraphs are not supported")
        if node_type not in object_info:
            raise ValueError(
                f"node {node_id} has type {node_type!r}, which the server does not know: install the pack that provides it"
            )
        inputs = _widget_inputs(node, object_info[node_type])
        for slot in node.get("inputs") or []:
            if slot.get("link") is None:
                continue
            source = _resolve(slot["link"], nodes, links)
            if source is None:
                continue
            origin, value = source
            inputs[slot["name"]] = value if origin is None else [str(origin[0]), origin[1]]
        prompt[str(node_id)] = {
            "class_type": node_type,
            "inputs": inputs,
            "_meta": {"title": node.get("title") or object_info[node_type].get("display_name") or node_type},
        }
    return prompt


def _links_by_id(links: list) -> dict[int, dict]:
    """Both link layouts as ``{id: {origin_id, origin_slot, target_id, target_slot, type}}``."""
    keys = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")
    table = {}
    for link in links:
        entry = dict(zip(keys, link)) if isinstance(link, list) else link
        table[entry["id"]] = entry
    return table


def _resolve(link_id: int, nodes: dict, links: dict, seen: frozenset = frozenset()) -> tuple[Link | None, Any] | None:
    """Where link `link_id` really comes from: ((node, slot), None), (None, primitive value), or None if cut."""
    link = links.get(link_id)
    if link is None or link_id in seen:
        return None
    seen = seen | {link_id}
    origin = nodes.get(link["origin_id"])
    if origin is None or origin.get("mode") == MODE_MUTED:
        return None
    if origin["type"] == "PrimitiveNode":
        values = origin.get("widgets_values") or [None]
        return None, values[0]
    if origin["type"] == "Reroute":
        return _follow_input(origin, 0, nodes, links, seen)
    if origin.get("mode") == MODE_BYPASSED:
        slot = _bypass_input(origin, link["origin_slot"], link.get("type"))
        return None if slot is None else _follow_input(origin, slot, nodes, links, seen)
    return (link["origin_id"], link["origin_slot"]), None


def _follow_input(node: dict, slot: int, nodes: dict, links: dict, seen: frozenset):
    inputs = node.get("inputs") or []
    if slot >= len(inputs) or inputs[slot].get("link") is None:
        return None
    return _resolve(inputs[slot]["link"], nodes, links, seen)


def _bypass_input(node: dict, output_slot: int, link_type: str | None) -> int | None:
    """The input a bypassed node passes to output `output_slot`: the same index if its type fits, else the first of that type."""
    inputs = node.get("inputs") or []
    outputs = node.get("outputs") or []
    wanted = link_type or (outputs[output_slot].get("type") if output_slot < len(outputs) else None)
    if output_slot < len(inputs) and inputs[output_slot].get("type") == wanted:
        return output_slot
    return next((i for i, slot in enumerate(inputs) if slot.get("type") == wanted), None)


def _widget_inputs(node: dict, info: dict) -> dict[str, Any]:
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
                f"node {node['id']} ({node['type']}): widgets_values has {len(values)} values, too few for input "
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
