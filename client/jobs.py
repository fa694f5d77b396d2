"""Turn a workflow and prompts-file rows into jobs: one final API prompt per row and repeat.

Seeds (applied to every literal ``seed``/``noise_seed`` input, or to the inputs named by
`seed_inputs`): a row's ``seed`` column wins; otherwise the `SeedPlan`:
``fixed`` (every row the same seed), ``range`` (successive seeds over the jobs in order),
or ``derived`` (default: a hash of the row's values and the repeat, so reruns agree and
inserting, removing or reordering rows leaves every other row's seed unchanged; the n-th
identical copy of a row also hashes n, so duplicates still differ).
With ``--repeat N`` the k-th repeat (from 0) adds k to a row's or a fixed seed.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import re
from dataclasses import dataclass

from .issues import Issue
from .overrides import apply_row, resolve_column
from .rows import Row
from .validate import is_link, validate_prompt

log = logging.getLogger(__name__)

AUTO_SEED_INPUTS = ("seed", "noise_seed")
SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class SeedPlan:
    """How jobs without a ``seed`` column get one: mode ``derived``, ``fixed`` or ``range``."""

    mode: str = "derived"
    start: int = 0
    stop: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("derived", "fixed", "range"):
            raise ValueError(f"seed mode must be derived, fixed or range, got {self.mode!r}")
        if self.mode == "range" and self.stop < self.start:
            raise ValueError(f"seed range {self.start}-{self.stop} is empty")

    @classmethod
    def parse(cls, text: str | None) -> "SeedPlan":
        """``None``/``derived``, ``42`` (fixed) or ``100-199`` (range, inclusive)."""
        if text is None or text == "derived":
            return cls()
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
        if not match:
            raise ValueError(f"--seed {text!r}: use a number (fixed), FIRST-LAST (a range) or 'derived'")
        if match.group(2) is None:
            return cls("fixed", int(match.group(1)))
        return cls("range", int(match.group(1)), int(match.group(2)))


@dataclass(frozen=True)
class Job:
    """One prompt to run: `key` names it in file names and the state file."""

    key: str
    row: Row
    repeat: int
    seed: int
    prompt: dict[str, dict]

    @property
    def fingerprint(self) -> str:
        """Identifies what the job computes: a changed row or workflow gives a new fingerprint."""
        return hashlib.sha256(json.dumps(self.prompt, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def stem(self) -> str:
        """``<job>-<seed>``: the base of the job's output file names."""
        return f"{self.key}-{self.seed}"


def plan_jobs(
    workflow: dict[str, dict],
    rows: list[Row],
    object_info: dict[str, dict],
    seeds: SeedPlan = SeedPlan(),
    repeat: int = 1,
    seed_inputs: list[str] | None = None,
) -> tuple[list[Job], list[Issue]]:
    """Jobs for every valid row, and the issues of the others (each naming row, node and input).

    Raises:
        ValueError: a setting that breaks every job (repeat < 1, an unknown `seed_inputs`
            entry, a seed range too short, duplicate row names).
    """
    if repeat < 1:
        raise ValueError(f"--repeat must be >= 1, got {repeat}")
    if seeds.mode == "range" and len(rows) * repeat > seeds.stop - seeds.start + 1:
        raise ValueError(f"seed range {seeds.start}-{seeds.stop} has fewer seeds than the {len(rows) * repeat} jobs")
    targets = _seed_targets(workflow, object_info, seed_inputs)
    jobs, issues = [], []
    copies: collections.Counter[str] = collections.Counter()
    for position, row in enumerate(rows):
        prompt, row_issues = apply_row(workflow, row.values, object_info)
        identity = json.dumps(row.values, sort_keys=True, default=str)
        copies[identity] += 1
        for k in range(repeat):
            seed = _seed(seeds, row, k, position * repeat + k, [identity, copies[identity], k])
            if isinstance(seed, Issue):
                issues.append(seed.for_row(row.label))
                break
            job_prompt = json.loads(json.dumps(prompt))
            for node_id, name in targets:
                job_prompt[node_id]["inputs"][name] = seed
            found = row_issues + validate_prompt(job_prompt, object_info)
            if found:
                issues += [issue.for_row(row.label) for issue in found]
                break
            jobs.append(Job(_job_key(row, k, repeat), row, k, seed, job_prompt))
    duplicates = sorted(key for key, count in collections.Counter(job.key for job in jobs).items() if count > 1)
    if duplicates:
        raise ValueError(f"rows share the names {duplicates}: give every row a distinct `name`")
    if not targets:
        log.warning("the workflow has no seed input (seed/noise_seed); seeds only label the files (use --seed-input NODE.INPUT)")
    return jobs, issues


def _seed_targets(workflow: dict, object_info: dict, seed_inputs: list[str] | None) -> list[tuple[str, str]]:
    if seed_inputs:
        return [target for ref in seed_inputs for target in resolve_column(ref, workflow, object_info)]
    return [
        (node_id, name) for node_id, node in workflow.items()
        for name in AUTO_SEED_INPUTS if name in node["inputs"] and not is_link(node["inputs"][name])
    ]


def _seed(seeds: SeedPlan, row: Row, k: int, index: int, identity: list) -> int | Issue:
    if "seed" in row.values:
        try:
            return int(str(row.values["seed"]).strip()) + k
        except ValueError:
            return Issue(f"seed {row.values['seed']!r} is not a whole number", input="seed")
    if seeds.mode == "fixed":
        return seeds.start + k
    if seeds.mode == "range":
        return seeds.start + index
    digest = hashlib.sha256(json.dumps(identity).encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _job_key(row: Row, k: int, repeat: int) -> str:
    base = SAFE_NAME.sub("_", str(row.values["name"])).strip("_") if row.values.get("name") else f"{row.index:04d}"
    return f"{base}_{k + 1}" if repeat > 1 else base
