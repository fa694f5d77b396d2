"""Apply a prompts-file row to an API workflow: which column sets which node input.

Columns:
- ``prompt`` / ``negative``: the text of the node feeding the sampler's ``positive`` /
  ``negative`` input (followed upstream through links), or of a node titled
  "Prompt"/"Positive" / "Negative";
- ``size``: ``WIDTHxHEIGHT``, sets every ``width`` and ``height``;
- ``<node>.<input>``: one input of the node with that id or title (``6.text``, ``Sampler.steps``);
- any other name: that input on every node that has it (``steps``, ``cfg``, ``sampler_name``;
  ``solver`` and ``sampler`` also match ``sampler_name``).
``seed`` and ``name`` are read by the job planner; ``image`` names a local input image
and ``source_image`` keeps its path (see `images`). CSV strings are converted to the
input's type; what does not fit is left for `validate` to report.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from .issues import Issue
from .validate import input_specs, is_link

PLANNER_COLUMNS = frozenset({"seed", "name", "source_image"})
TEXT_ROLES = {"prompt": ("positive", {"prompt", "positive", "positive prompt"}), "negative": ("negative", {"negative", "negative prompt"})}
TEXT_INPUTS = ("text", "prompt")
INPUT_ALIASES = {"solver": ("solver", "sampler_name"), "sampler": ("sampler", "sampler_name", "solver")}
SIZE_PATTERN = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")

Target = tuple[str, str]  # (node id, input name)


def apply_row(prompt: dict[str, dict], values: dict[str, Any], object_info: dict[str, dict]) -> tuple[dict, list[Issue]]:
    """A copy of `prompt` with the row's columns applied, and the columns that could not be placed."""
    result = copy.deepcopy(prompt)
    issues = []
    for column, value in values.items():
        if column in PLANNER_COLUMNS:
            continue
        try:
            assignments = _assignments(column, value, result, object_info)
        except ValueError as error:
            issues.append(Issue(str(error), input=column))
            continue
        for (node_id, name), item in assignments:
            result[node_id]["inputs"][name] = _coerce(item, result[node_id], name, object_info)
    return result, issues


def resolve_column(column: str, prompt: dict[str, dict], object_info: dict[str, dict]) -> list[Target]:
    """The (node id, input) pairs a column sets.

    Raises:
        ValueError: the column names no node or no input; the message lists what exists.
    """
    if column in TEXT_ROLES:
        return _text_targets(column, prompt)
    if "." in column:
        node_ref, name = column.rsplit(".", 1)
        nodes = _nodes_by_ref(node_ref, prompt)
        for node_id in nodes:
            known = set(prompt[node_id]["inputs"]) | set(input_specs(object_info.get(prompt[node_id]["class_type"], {})))
            if name not in known:
                raise ValueError(
                    f"column {column!r}: node {node_id} ({prompt[node_id]['class_type']}) has no input {name!r} "
                    f"(inputs: {', '.join(sorted(known))})"
                )
        return [(node_id, name) for node_id in nodes]
    for name in INPUT_ALIASES.get(column, (column,)):
        targets = [(node_id, name) for node_id, node in prompt.items() if name in node["inputs"] and not is_link(node["inputs"][name])]
        targets = targets or [
            (node_id, name) for node_id, node in prompt.items()
            if name in input_specs(object_info.get(node["class_type"], {})) and name not in node["inputs"]
        ]
        if targets:
            return targets
    settable = sorted({name for node in prompt.values() for name, value in node["inputs"].items() if not is_link(value)})
    raise ValueError(
        f"column {column!r} matches no node input; use an input name ({', '.join(settable)}), "
        f"NODE.INPUT with a node id or title, prompt, negative, size or seed"
    )


def _assignments(column: str, value: Any, prompt: dict, object_info: dict) -> list[tuple[Target, Any]]:
    if column == "size":
        match = SIZE_PATTERN.match(str(value))
        if not match:
            raise ValueError(f"size {value!r} is not WIDTHxHEIGHT (e.g. 64x48)")
        width, height = int(match.group(1)), int(match.group(2))
        return [(t, width) for t in resolve_column("width", prompt, object_info)] + [
            (t, height) for t in resolve_column("height", prompt, object_info)
        ]
    return [(target, value) for target in resolve_column(column, prompt, object_info)]


def _nodes_by_ref(node_ref: str, prompt: dict[str, dict]) -> list[str]:
    if node_ref in prompt:
        return [node_ref]
    wanted = node_ref.casefold()
    matches = [node_id for node_id, node in prompt.items() if (node.get("_meta") or {}).get("title", "").casefold() == wanted]
    if not matches:
        titles = sorted({(node.get("_meta") or {}).get("title", "") for node in prompt.values()} - {""})
        raise ValueError(f"no node with id or title {node_ref!r} (ids: {', '.join(prompt)}; titles: {', '.join(titles)})")
    return matches


def _text_targets(role: str, prompt: dict[str, dict]) -> list[Target]:
    """The text inputs behind the sampler's positive/negative input, else a node titled for the role."""
    link_input, titles = TEXT_ROLES[role]
    titled = [
        (node_id, name) for node_id, node in prompt.items()
        if (node.get("_meta") or {}).get("title", "").casefold() in titles
        for name in TEXT_INPUTS if isinstance(node["inputs"].get(name), str)
    ]
    if titled:
        return titled
    starts = [node["inputs"][link_input][0] for node in prompt.values() if is_link(node["inputs"].get(link_input))]
    targets = _upstream_text(starts, prompt)
    if targets:
        return targets
    raise ValueError(
        f"column {role!r}: no text node feeds a {link_input!r} input and none is titled {sorted(titles)[0]!r}; "
        f"title the text node or use NODE.text"
    )


def _upstream_text(starts: list[str], prompt: dict[str, dict]) -> list[Target]:
    found, seen, frontier = [], set(), list(starts)
    while frontier:
        node_id = frontier.pop(0)
        if node_id in seen or node_id not in prompt:
            continue
        seen.add(node_id)
        inputs = prompt[node_id]["inputs"]
        texts = [(node_id, name) for name in TEXT_INPUTS if isinstance(inputs.get(name), str)]
        found += texts
        if not texts:
            frontier += [value[0] for value in inputs.values() if is_link(value)]
    return found


def _coerce(value: Any, node: dict, name: str, object_info: dict) -> Any:
    """CSV text to the input's type (INT, FLOAT, BOOLEAN); other values unchanged."""
    if not isinstance(value, str):
        return value
    kind = input_specs(object_info.get(node["class_type"], {})).get(name, (None, {}))[0]
    try:
        if kind == "INT":
            return int(value.strip())
        if kind == "FLOAT":
            return float(value.strip())
    except ValueError:
        return value
    if kind == "BOOLEAN" and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    return value
