"""The batch client's Python API: `run_queue(workflow, prompts, out_dir, servers)`.

It loads the workflow (API format, or UI format converted with the server's
/object_info), plans one job per row and repeat, reports every invalid row before
anything is queued, then runs the valid jobs (see `runner`) and returns a `Summary`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .api import ComfyAPI, ServerUnavailable, with_retries
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


def load_workflow(workflow: str | Path | dict, object_info: dict[str, dict]) -> tuple[dict[str, dict], dict | None]:
    """(API prompt, UI workflow or None) for a workflow file or dict in either format.

    Raises:
        ValueError: neither format, or a UI workflow that cannot be converted.
    """
    data = json.loads(Path(workflow).read_text()) if isinstance(workflow, (str, Path)) else workflow
    if not isinstance(data, dict):
        raise ValueError(f"{workflow}: a workflow is a JSON object (API or UI format)")
    if is_ui_workflow(data):
        return ui_to_api(data, object_info), data
    bad = [node_id for node_id, node in data.items() if not isinstance(node, dict) or "class_type" not in node]
    if bad:
        raise ValueError(f"{workflow}: nodes {bad[:5]} have no class_type; is this an API-format workflow?")
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
    raise ServerUnavailable("no server answered /object_info: " + "; ".join(errors))


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
        prompts: a .txt/.csv/.jsonl file, or rows as dicts (column -> value, see `overrides`); an
            ``image`` column names a local input image (relative to the file's folder; see `images`).
        out_dir: images ``<job>-<seed>.png``, JSON sidecars and the state file.
        servers: ComfyUI base URLs.
        seed: ``"42"`` (fixed), ``"100-199"`` (range), None/``"derived"``, or a SeedPlan.
        repeat: jobs per row.
        seed_inputs: ``NODE.INPUT`` references that take the seed (default: every seed/noise_seed).
        settings: pacing and retry settings.

    Returns:
        The Summary; invalid rows are listed in `Summary.invalid` and did not run.
    """
    object_info = fetch_object_info(servers)
    api_prompt, ui_workflow = load_workflow(workflow, object_info)
    rows = (
        read_rows(prompts) if isinstance(prompts, (str, Path))
        else [Row(index, index, dict(values)) for index, values in enumerate(prompts, 1)]
    )
    rows, images = attach_images(rows, Path(prompts).parent if isinstance(prompts, (str, Path)) else Path.cwd())
    seeds = seed if isinstance(seed, SeedPlan) else SeedPlan.parse(seed)
    plan_info = with_upload_options(object_info, api_prompt, images)
    jobs, issues = plan_jobs(api_prompt, rows, plan_info, seeds, repeat, seed_inputs)
    for issue in issues:
        log.error("invalid: %s", issue)
    if issues:
        log.error("%d of %d rows are invalid and will not run; the other %d jobs run",
                  len({issue.row for issue in issues}), len(rows), len(jobs))
    out_dir = Path(out_dir)
    state = StateFile(out_dir)
    extra_data = {"extra_pnginfo": {"workflow": ui_workflow}} if ui_workflow else {}
    try:
        prepare = Uploader(images, out_dir) if images else None
        summary = BatchRunner(jobs, servers, out_dir, state, settings, extra_data, prepare).run()
    finally:
        state.close()
    summary.invalid = issues
    return summary
