"""Optimal time grids for a given model, prompts, solver and step count, found by dynamic
programming over a dense candidate grid ("Optimal Stepsize for Diffusion Sampling",
Pei et al. 2025; what ComfyUI ships as fixed 10-step tables for three models).

Everything here is in ComfyUI's sigma (1 = noise, 0 = data; sigma = 1 - t, see
`samplers/__init__`) on a k-diffusion-shaped denoiser `D(x, sigma [B], **extra) -> data
estimate`, the interface `sample_flow` drives, so a searched grid is exactly what
FlowMatchSampler will step through. A seed-time velocity becomes a denoiser with
`denoiser_from_velocity`.

The search, for one solver on a batch of starting noises x (prompts and CFG live in D):
1. candidates sigma_0 = 1 > sigma_1 > ... > sigma_M = 0 (`candidate_sigmas`);
2. reference states r_k at every candidate: a fine rk4 solve, `substeps` rk4 steps per
   candidate interval (the last one ends at sigma = 0 by `sample_flow`'s end rule);
3. the cost of a step i -> j (i < j): c[i, j] = RMS(step(r_i, sigma_i -> sigma_j) - r_j),
   `step` being one `sample_flow` interval of the solver, with its end-at-zero rule for
   j = M, exactly as the sampler takes it. D at r_i is shared by all j (memoised), so
   euler's costs are free and an s-stage method pays s - 1 calls per pair;
4. the best N-step grid minimises the sum of its steps' costs: best_N(j) =
   min_i best_{N-1}(i) + c[i, j], solved exactly by `best_grid`. One cost matrix serves
   every step count, and it is what the cache stores.

Single-step methods are handled exactly (every step starts from the reference, as the
paper's cost does). A multistep method's step also depends on its history; its costs here
are those of its first (starting) step, i.e. the grid is searched for the method without
history, and the sampler then runs the full method on it.

The cache (`ScheduleCache`) keeps one JSON record per (model weights fingerprint, search
settings), with the cost matrix and the candidates, so a search runs once and any step
count is instant afterwards. Records are written atomically.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from .comfy_bridge import sample_flow
from .conventions import per_sample, t_from_sigma

Denoiser = Callable[..., Tensor]
"""denoiser(x [B, ...], sigma [B], **extra_args) -> data estimate, ComfyUI's sampler-side model."""

DEFAULT_CANDIDATES = 48
DEFAULT_SUBSTEPS = 2
REFERENCE_METHOD = "rk4"


def candidate_sigmas(count: int = DEFAULT_CANDIDATES) -> Tensor:
    """`count` + 1 candidate sigmas from 1 to 0 (float64), denser near both ends than in the
    middle (half uniform, half cosine spacing): the ends are where step sizes matter most."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be an int >= 1, got {count!r}")
    u = torch.linspace(0.0, 1.0, count + 1, dtype=torch.float64)
    sigmas = 1 - (0.5 * u + 0.25 * (1 - torch.cos(math.pi * u)))
    sigmas[0], sigmas[-1] = 1.0, 0.0
    return sigmas


def denoiser_from_velocity(velocity: Callable[[Tensor, Tensor], Tensor]) -> Denoiser:
    """A seed-time velocity v(x, t) as a ComfyUI-style denoiser: D(x, sigma) = x + sigma * v(x, 1 - sigma)."""

    def denoiser(x: Tensor, sigma: Tensor, **extra_args: Any) -> Tensor:
        return x + per_sample(sigma, x) * velocity(x, t_from_sigma(sigma))

    return denoiser


class ReferenceMemo:
    """Wraps a denoiser: counts its calls and remembers D at the reference states, so every
    step of the cost matrix that starts at a reference state reuses that evaluation."""

    def __init__(self, denoiser: Denoiser, sigmas: Tensor):
        self.denoiser = denoiser
        self.sigmas = [float(s) for s in sigmas]
        self.saved: dict[int, tuple[Tensor, Tensor]] = {}
        self.recording = False
        self.calls = 0

    def _index(self, sigma: Tensor) -> int | None:
        value = float(sigma.flatten()[0])
        index = min(range(len(self.sigmas)), key=lambda k: abs(self.sigmas[k] - value))
        return index if abs(self.sigmas[index] - value) <= 1e-6 else None

    def __call__(self, x: Tensor, sigma: Tensor, **extra_args: Any) -> Tensor:
        index = self._index(sigma)
        if index is not None and index in self.saved and torch.equal(self.saved[index][0], x):
            return self.saved[index][1].clone()
        self.calls += 1
        out = self.denoiser(x, sigma, **extra_args)
        if self.recording and index is not None:
            # The last call at a candidate sigma during the reference solve is the one at its
            # reference state (an rk4 stage at the interval's end comes before it).
            self.saved[index] = (x.clone(), out.clone())
        return out


def _one_run(denoiser: Denoiser, x: Tensor, sigmas: Tensor, method: str, extra_args: dict) -> Tensor:
    return sample_flow(denoiser, x, sigmas, extra_args=extra_args, method=method)


def reference_states(memo: ReferenceMemo, x: Tensor, sigmas: Tensor, substeps: int, extra_args: dict) -> list[Tensor]:
    """r_k at every candidate sigma, by rk4 with `substeps` uniform sub-steps per interval."""
    states = [x.float()]
    memo.recording = True
    for a, b in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        fine = torch.linspace(a, b, substeps + 1, dtype=torch.float64)
        states.append(_one_run(memo, states[-1], fine, REFERENCE_METHOD, extra_args).float())
    memo.recording = False
    return states


def rms(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).pow(2).mean().sqrt())


def step_costs(memo: ReferenceMemo, states: list[Tensor], sigmas: Tensor, method: str, extra_args: dict,
               progress: Callable[[int, int], None] | None = None) -> Tensor:
    """c [M + 1, M + 1] (float64): c[i, j] = RMS of one `method` step r_i -> sigma_j against r_j for
    i < j, +inf elsewhere."""
    m = len(states) - 1
    costs = torch.full((m + 1, m + 1), math.inf, dtype=torch.float64)
    for i in range(m):
        for j in range(i + 1, m + 1):
            pair = torch.stack([sigmas[i], sigmas[j]])
            costs[i, j] = rms(_one_run(memo, states[i], pair, method, extra_args), states[j])
        if progress is not None:
            progress(i + 1, m)
    return costs


def best_grid(costs: Tensor, steps: int) -> tuple[list[int], float]:
    """The candidate indices 0 = k_0 < k_1 < ... < k_steps = M minimising sum c[k_n, k_n+1], and that sum.

    Exact dynamic programming over the number of steps, O(steps * M^2).

    Raises:
        ValueError: costs not square, or steps outside 1..M.
    """
    if costs.ndim != 2 or costs.shape[0] != costs.shape[1]:
        raise ValueError(f"costs must be a square matrix, got shape {tuple(costs.shape)}")
    m = costs.shape[0] - 1
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= m:
        raise ValueError(f"steps must be an int in 1..{m} (the number of candidate intervals), got {steps!r}")
    costs = costs.double()
    best = torch.full((m + 1,), math.inf, dtype=torch.float64)
    best[0] = 0.0
    came_from = []
    for _ in range(steps):
        totals = best[:, None] + costs  # [from, to]
        best, argmin = totals.min(dim=0)
        came_from.append(argmin)
    path = [m]
    for argmin in reversed(came_from):
        path.append(int(argmin[path[-1]]))
    return path[::-1], float(best[m])


@dataclass(frozen=True)
class SearchSettings:
    """What a search depends on besides the model; `description` names the calibration
    batch (prompts, cfg, noise seed and shape) so the cache can tell searches apart."""

    method: str
    description: dict = field(default_factory=dict)
    candidates: int = DEFAULT_CANDIDATES
    substeps: int = DEFAULT_SUBSTEPS

    def __post_init__(self):
        if not isinstance(self.substeps, int) or self.substeps < 1:
            raise ValueError(f"substeps must be an int >= 1, got {self.substeps!r}")
        candidate_sigmas(self.candidates)  # validates


@dataclass
class SearchRecord:
    """A finished search: candidates, cost matrix (None = +inf), and what it cost."""

    model: str
    settings: dict
    sigmas: list[float]
    costs: list[list[float | None]]
    nfe: int
    seconds: float

    def cost_matrix(self) -> Tensor:
        return torch.tensor([[math.inf if c is None else c for c in row] for row in self.costs], dtype=torch.float64)

    def grid(self, steps: int) -> tuple[Tensor, float]:
        """(sigmas [steps + 1] from 1 to 0, float32; the grid's summed step cost)."""
        path, total = best_grid(self.cost_matrix(), steps)
        return torch.tensor([self.sigmas[k] for k in path], dtype=torch.float32), total

    @property
    def intervals(self) -> int:
        return len(self.sigmas) - 1

    def matches(self, model: str, method: str, cfg: float | None = None) -> bool:
        return (self.model == model and self.settings["method"] == method
                and (cfg is None or self.settings["description"].get("cfg") == cfg))


def search(denoiser: Denoiser, x: Tensor, settings: SearchSettings, model: str = "", extra_args: dict | None = None,
           progress: Callable[[int, int], None] | None = None) -> SearchRecord:
    """Run a search (steps 2 and 3 of the module docstring) from noise `x` at sigma = 1.

    Args:
        denoiser: D(x, sigma [B], **extra_args) with prompts and guidance inside.
        x: starting noise [B, ...], sigma = 1 (the calibration batch).
        settings: the solver and search resolution.
        model: the model's weights fingerprint (`weights_fingerprint`), recorded.
        progress: progress(done, total) after each start candidate of the cost matrix.
    """
    extra_args = {} if extra_args is None else extra_args
    sigmas = candidate_sigmas(settings.candidates)
    memo = ReferenceMemo(denoiser, sigmas)
    start = time.perf_counter()
    with torch.no_grad():
        states = reference_states(memo, x, sigmas, settings.substeps, extra_args)
        costs = step_costs(memo, states, sigmas, settings.method, extra_args, progress)
    return SearchRecord(
        model=model, settings=asdict(settings), sigmas=sigmas.tolist(),
        costs=[[None if math.isinf(c) else c for c in row] for row in costs.tolist()],
        nfe=memo.calls, seconds=time.perf_counter() - start,
    )


def weights_fingerprint(state_dict: dict[str, Tensor], extra: Any = None) -> str:
    """sha256 over names, shapes and float32 values of a model's weights (plus `extra`, e.g.
    LoRA patches): the key under which searched grids are cached. Tensors over 2^20 elements
    contribute 2^20 evenly strided values, so a 12B-parameter model hashes in seconds."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach()
        digest.update(f"{name}:{tuple(tensor.shape)};".encode())
        flat = tensor.reshape(-1)
        if flat.numel() > 1 << 20:
            flat = flat[:: flat.numel() // (1 << 20)]
        digest.update(flat.to(device="cpu", dtype=torch.float32).contiguous().numpy().tobytes())
    if extra is not None:
        digest.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def settings_key(model: str, settings: SearchSettings) -> str:
    blob = json.dumps({"model": model, **asdict(settings)}, sort_keys=True, default=str)
    return f"{model[:16]}-{settings.method}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


class ScheduleCache:
    """Search records as JSON files in `folder`, one per (model, settings)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def path(self, model: str, settings: SearchSettings) -> Path:
        return self.folder / f"{settings_key(model, settings)}.json"

    def load(self, model: str, settings: SearchSettings) -> SearchRecord | None:
        path = self.path(model, settings)
        return SearchRecord(**json.loads(path.read_text())) if path.is_file() else None

    def latest(self, model: str, method: str, cfg: float | None = None) -> SearchRecord | None:
        """The most recently written record for this model and solver (and cfg, when given),
        whatever prompt it was searched on."""
        paths = sorted(self.folder.glob(f"{model[:16]}-{method}-*.json"), key=lambda p: p.stat().st_mtime)
        for path in reversed(paths):
            record = SearchRecord(**json.loads(path.read_text()))
            if record.matches(model, method, cfg):
                return record
        return None

    def save(self, record: SearchRecord) -> Path:
        settings = SearchSettings(**record.settings)
        path = self.path(record.model, settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".partial", delete=False) as handle:
            json.dump(asdict(record), handle)
        os.replace(handle.name, path)
        return path


def cached_search(cache: ScheduleCache, denoiser: Denoiser, x: Tensor, settings: SearchSettings, model: str,
                  **options: Any) -> tuple[SearchRecord, bool]:
    """(record, True if it came from the cache): searches only when the cache has no record."""
    record = cache.load(model, settings)
    if record is not None:
        return record, True
    record = search(denoiser, x, settings, model, **options)
    cache.save(record)
    return record, False


def default_cache_folder() -> Path:
    """$FLOWMATCH_SCHEDULE_CACHE, else ~/.cache/comfyui_flowmatch/optimal_schedules (outside ComfyUI;
    inside, the nodes use ComfyUI's user directory)."""
    folder = os.environ.get("FLOWMATCH_SCHEDULE_CACHE")
    return Path(folder) if folder else Path.home() / ".cache" / "comfyui_flowmatch" / "optimal_schedules"


SHIPPED = Path(__file__).resolve().parent / "optimal_schedules.json"
"""Searched records shipped with the pack (the bundled model's), written by
`python -m comfyui_flowmatch.models.optimal_schedule --ship`."""


def shipped_records(path: Path = SHIPPED) -> list[SearchRecord]:
    if not path.is_file():
        return []
    return [SearchRecord(**record) for record in json.loads(path.read_text())["records"]]


def shipped_record(model: str, method: str, cfg: float | None = None, path: Path = SHIPPED) -> SearchRecord | None:
    """The shipped record for this model weights fingerprint and solver (and cfg), if any."""
    return next((r for r in shipped_records(path) if r.matches(model, method, cfg)), None)


def ship(record: SearchRecord, path: Path = SHIPPED) -> None:
    """Add `record` to the shipped file, replacing one for the same model, solver and cfg; atomic."""
    cfg = record.settings["description"].get("cfg")
    records = [r for r in shipped_records(path) if not r.matches(record.model, record.settings["method"], cfg)]
    records.append(record)
    compact = [{**asdict(r), "costs": [[None if c is None else float(f"{c:.5g}") for c in row] for row in r.costs]}
               for r in records]
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".partial", delete=False) as handle:
        json.dump({"records": compact}, handle, separators=(",", ":"))
        os.chmod(handle.name, 0o644)
    os.replace(handle.name, path)
