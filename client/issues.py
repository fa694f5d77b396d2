"""Problems found in a job, named by row, node and input; the client's checks and a server's
400 `node_errors` are reported in this one shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Issue:
    """One problem: what is wrong, and where (any of row, node, input may be unknown)."""

    message: str
    row: str | None = None
    node: str | None = None
    input: str | None = None

    def __str__(self) -> str:
        where = [part for part in (self.row, self.node and f"node {self.node}", self.input and f"input {self.input!r}") if part]
        return f"{', '.join(where)}: {self.message}" if where else self.message

    def for_row(self, row: str) -> "Issue":
        return Issue(self.message, row, self.node, self.input)


def describe_node(prompt: dict[str, dict], node_id: str) -> str:
    """``6 'Positive' (CLIPTextEncode)``: id, title and type of a node of an API prompt."""
    node = prompt.get(node_id) or {}
    title = (node.get("_meta") or {}).get("title")
    class_type = node.get("class_type", "?")
    return f"{node_id} {title!r} ({class_type})" if title and title != class_type else f"{node_id} ({class_type})"


def issues_from_node_errors(node_errors: dict[str, Any], prompt: dict[str, dict], error: dict | None = None) -> list[Issue]:
    """A server's 400 answer to POST /prompt as Issues (its top-level error when no node is named)."""
    issues = []
    for node_id, report in (node_errors or {}).items():
        for entry in report.get("errors", []):
            input_name = (entry.get("extra_info") or {}).get("input_name")
            message = entry.get("details") or entry.get("message") or entry.get("type", "invalid")
            issues.append(Issue(f"{entry.get('type', 'error')}: {message}", node=describe_node(prompt, node_id), input=input_name))
    if not issues and error:
        issues.append(Issue(f"{error.get('type', 'error')}: {error.get('message', '')} {error.get('details', '')}".strip()))
    return issues
