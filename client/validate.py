"""Check an API prompt against a server's /object_info before queueing it.

The checks mirror the ones ComfyUI runs on POST /prompt (types exist, required inputs
are there, links point at real outputs, numbers within min/max, combo values among the
options), so a bad row is reported for every row at once, before anything runs.
"""

from __future__ import annotations

from typing import Any

from .issues import Issue, describe_node

InputSpec = tuple[Any, dict]  # (type name or list of combo options, options dict)


def input_specs(info: dict) -> dict[str, InputSpec]:
    """Required and optional inputs of one /object_info node entry: name -> (kind, options)."""
    specs = {}
    for section in ("required", "optional"):
        for name, spec in (info.get("input", {}).get(section) or {}).items():
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            specs[name] = (spec[0], options)
    return specs


def combo_options(kind: Any, options: dict) -> list | None:
    """The allowed values of a combo input (V1 list or V3 ``COMBO``), None for other kinds."""
    if isinstance(kind, list):
        return kind
    if kind == "COMBO":
        return list(options.get("options", []))
    return None


def is_link(value: Any) -> bool:
    """An API-format link: ``["node id", output slot]``."""
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def value_problem(kind: Any, options: dict, value: Any) -> str | None:
    """Why `value` does not fit an input of `kind`, or None if it does."""
    choices = combo_options(kind, options)
    if choices is not None:
        if value not in choices:
            shown = ", ".join(map(repr, choices[:8])) + (", ..." if len(choices) > 8 else "")
            return f"{value!r} is not one of the options ({shown})"
        return None
    if kind in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{value!r} is not a number"
        if kind == "INT" and value != int(value):
            return f"{value!r} is not a whole number"
        if options.get("min") is not None and value < options["min"]:
            return f"{value!r} is smaller than the minimum {options['min']}"
        if options.get("max") is not None and value > options["max"]:
            return f"{value!r} is bigger than the maximum {options['max']}"
    elif kind == "STRING" and not isinstance(value, str):
        return f"{value!r} is not text"
    elif kind == "BOOLEAN" and not isinstance(value, bool):
        return f"{value!r} is not true/false"
    return None


def validate_prompt(prompt: dict[str, dict], object_info: dict[str, dict]) -> list[Issue]:
    """Every problem ComfyUI would reject `prompt` for, as Issues naming node and input."""
    issues = []
    for node_id, node in prompt.items():
        where = describe_node(prompt, node_id)
        info = object_info.get(node.get("class_type"))
        if info is None:
            issues.append(Issue(f"node type {node.get('class_type')!r} is not installed on the server", node=where))
            continue
        specs = input_specs(info)
        hidden = set((info.get("input", {}).get("hidden") or {}))
        inputs = node.get("inputs", {})
        for name in info.get("input", {}).get("required", {}):
            if name not in inputs:
                issues.append(Issue("required input is missing", node=where, input=name))
        for name, value in inputs.items():
            if name not in specs:
                if name not in hidden:
                    issues.append(Issue(f"{node['class_type']} has no such input (inputs: {', '.join(specs)})", node=where, input=name))
                continue
            problem = _link_problem(prompt, value) if is_link(value) else _literal_problem(specs[name], value)
            if problem:
                issues.append(Issue(problem, node=where, input=name))
    return issues


def _link_problem(prompt: dict[str, dict], link: list) -> str | None:
    if link[0] not in prompt:
        return f"linked to node {link[0]}, which is not in the workflow"
    return None


def _literal_problem(spec: InputSpec, value: Any) -> str | None:
    if isinstance(value, dict) and "__value__" in value:
        return None
    return value_problem(spec[0], spec[1], value)
