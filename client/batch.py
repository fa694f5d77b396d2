"""The batch client's Python API: `run_queue(workflow, prompts, out_dir, servers)`.

It loads the workflow (API format, or UI format converted with the server's
/object_info), plans one job per row and repeat, reports every invalid row before
anything is queued, then runs the valid jobs (see `runner`) and returns a `Summary`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .api import ComfyAPI, ServerUnavailable, check_url, with_retries
from .files import read_json
from .images import Uploader, attach_images, with_upload_options
from .jobs import SeedPlan, plan_jobs
from .rows import Row, read_rows
from .runner import BatchRunner, QueueSettings
from .state import StateFile
from .summary import Summary
from .ui_to_api import ui_to_api

log = logging.getLogger(__name__)


def is_ui_workflow(workflow: dict) -> bool:
    """Whether `workflow` is the frontend's (litegraph) format rather than the API format."""
    return isinstance(workflow.get("nodes"), list)


def load_workflow(
    workflow: str | Path | dict, object_info: dict[str, dict], source: str | Path | None = None
) -> tuple[dict[str, dict], dict | None]:
    """(API prompt, UI workflow or None) for a workflow file or dict in either format.

    `source` names a dict's file in error messages.

    Raises:
        ValueError: not JSON (naming file and line), neither format, or a UI workflow that
            cannot be converted.
    """
    is_path = isinstance(workflow, (str, Path))
    data = read_json(workflow, "workflow") if is_path else workflow
    where = f"workflow {workflow if is_path else source or '(given as a dict)'}"
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{where}: a workflow is a non-empty JSON object (API or UI format)")
    if is_ui_workflow(data):
        try:
            return ui_to_api(data, object_info), data
        except (KeyError, TypeError, IndexError, AttributeError) as error:
            raise ValueError(f"{where}: a malformed UI workflow ({type(error).__name__}: {error}); "
                             f"re-save it from the ComfyUI frontend") from None
    bad = [node_id for node_id, node in data.items()
           if not isinstance(node, dict) or not isinstance(node.get("class_type"), str)
           or not isinstance(node.get("inputs", {}), dict)]
    if bad:
        raise ValueError(f"{where}: nodes {bad[:5]} have no class_type name or inputs object; "
                         f"is this an API-format workflow (the frontend's 'Export (API)')?")
    for node in data.values():
        node.setdefault("inputs", {})
    return data, None


def fetch_object_info(servers: list[str]) -> dict[str, dict]:
    """/object_info from the first server that answers.

    Raises:
        ServerUnavailable: none answered.
    """
    errors = []
    for url in servers:
        try:
            return with_retries(ComfyAPI(url).object_info)
        except ServerUnavailable as error:
            errors.append(str(error))
    raise ServerUnavailable("no server answered /object_info: " + "; ".join(errors)
                            + ". Is ComfyUI running there? (start one with `make serve`)")


def run_queue(
    workflow: str | Path | dict,
    prompts: str | Path | list[dict[str, Any]],
    out_dir: str | Path,
    servers: list[str],
    seed: str | SeedPlan | None = None,
    repeat: int = 1,
    seed_inputs: list[str] | None = None,
    settings: QueueSettings = QueueSettings(),
) -> Summary:
    """Run one job per prompts row (times `repeat`) on `servers`; files land in `out_dir`.

    Args:
        workflow: an API- or UI-format workflow (path or dict).
        prompts: a .txt/.csv/.jsonl file, or rows as dicts (column -> value, see `overrides`;
            None keeps the workflow's value, as an empty cell does); an ``image`` column names
            a local input image (relative to the file's folder; see `images`).
        out_dir: images ``<job>-<seed>.png``, JSON sidecars and the state file.
        servers: ComfyUI base URLs.
        seed: ``"42"`` (fixed), ``"100-199"`` (range), None/``"derived"``, or a SeedPlan.
        repeat: jobs per row.
        seed_inputs: ``NODE.INPUT`` references that take the seed (default: every seed/noise_seed).
        settings: pacing and retry settings.

    Returns:
        The Summary; invalid rows are listed in `Summary.invalid` and did not run.
    """
    if not servers:
        raise ValueError("give at least one server URL (--server http://127.0.0.1:8188)")
    for url in servers:
        check_url(url)
    # Everything local is checked before any server is asked, and before the folder is touched.
    workflow_data = read_json(workflow, "workflow") if isinstance(workflow, (str, Path)) else workflow
    rows = (
        read_rows(prompts) if isinstance(prompts, (str, Path))
        else [Row(index, index, {column: value for column, value in values.items() if value is not None})
              for index, values in enumerate(prompts, 1)]
    )
    if not rows:
        raise ValueError(f"prompts file {prompts}: no rows (blank lines, # comments and all-empty rows are skipped)"
                         if isinstance(prompts, (str, Path)) else "no rows given")
    rows, images = attach_images(rows, Path(prompts).parent if isinstance(prompts, (str, Path)) else Path.cwd())
    seeds = seed if isinstance(seed, SeedPlan) else SeedPlan.parse(seed)
    out_dir = Path(out_dir)
    state = StateFile(out_dir)
    try:
        object_info = fetch_object_info(servers)
        source = workflow if isinstance(workflow, (str, Path)) else None
        api_prompt, ui_workflow = load_workflow(workflow_data, object_info, source=source)
        plan_info = with_upload_options(object_info, api_prompt, images)
        jobs, issues = plan_jobs(api_prompt, rows, plan_info, seeds, repeat, seed_inputs)
        for issue in issues:
            log.error("invalid: %s", issue)
        if issues:
            log.error("%d of %d rows are invalid and will not run; the other %d jobs run",
                      len({issue.row for issue in issues}), len(rows), len(jobs))
        extra_data = {"extra_pnginfo": {"workflow": ui_workflow}} if ui_workflow else {}
        prepare = Uploader(images, out_dir) if images else None
        summary = BatchRunner(jobs, servers, out_dir, state, settings, extra_data, prepare).run()
    finally:
        state.close()
    summary.invalid = issues
    return summary
