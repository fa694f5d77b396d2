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

Single-step methods (textbook tableaus, flow_midpoint) are handled exactly as above. The
two-point multistep method (flow_2m, `PAIR_METHODS`) is handled exactly too, with the
history teacher-forced like the state: its step i -> j also uses D at the previous grid
point h, so its cost is c[h, i, j] (D at r_h and r_i, both memoised: no model call) and the
dynamic programme runs over pairs (h, i) of last grid points; its first step (no history)
costs c[0, j] of the one-point step. Methods whose history reaches further use the grid
searched for a related method (`SEARCHED_AS`): flow_3m and flow_reuse (whose start point is
the previous step's midpoint stage) use flow_2m's, the other one-call-per-step second-order
data-prediction method.

The cache (`ScheduleCache`) keeps one JSON record per (model weights fingerprint, search
settings) with the best grid for every step count 1..M, so a search runs once and any step
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
from .methods import METHODS
from .optimal_propagated import PROPAGATED_METHODS, propagated_grids

Denoiser = Callable[..., Tensor]
"""denoiser(x [B, ...], sigma [B], **extra_args) -> data estimate, ComfyUI's sampler-side model."""

DEFAULT_CANDIDATES = 48
DEFAULT_SUBSTEPS = 2
REFERENCE_METHOD = "rk4"
DEFAULT_MAX_STEPS = 24
OBJECTIVES = ("local", "propagated")
PAIR_METHODS = ("flow_2m",)
"""Multistep methods whose step uses one earlier grid point: searched over pairs of grid points."""
SEARCHED_AS = {"flow_3m": "flow_2m", "flow_reuse": "flow_2m"}
"""Method -> the method whose searched grid it uses (its history reaches past one grid point)."""
SEARCHABLE = tuple(name for name, m in METHODS.items() if m.calls_per_step is not None)
"""Fixed-step methods (an adaptive one picks its own steps)."""


def searched_method(method: str) -> str:
    """The method a grid for `method` is searched with (see `SEARCHED_AS`).

    Raises:
        ValueError: `method` is adaptive or unknown.
    """
    if method not in SEARCHABLE:
        raise ValueError(f"an optimal grid needs a fixed-step solver, one of {list(SEARCHABLE)}; got {method!r}")
    return SEARCHED_AS.get(method, method)


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


def pair_step_costs(memo: ReferenceMemo, states: list[Tensor], sigmas: Tensor, method: str, extra_args: dict,
                    progress: Callable[[int, int], None] | None = None) -> Tensor:
    """c [M + 1]^3 (float64) for a two-point multistep `method`: c[h, i, j] (h < i < j) = RMS of its
    step r_i -> sigma_j with history D(r_h) against r_j, +inf elsewhere.

    The step is taken by the engine over [sigma_h, sigma_i, sigma_j] from r_h with the
    reference D at candidate sigmas; the engine's own state at sigma_i, x~_i, differs from r_i,
    and a data-prediction step is linear in the state with factor sigma_j / sigma_i, so the
    teacher-forced step is the run's result minus (sigma_j / sigma_i) * (x~_i - r_i).
    """
    m = len(states) - 1
    teacher = TeacherDenoiser(memo)
    costs = torch.full((m + 1, m + 1, m + 1), math.inf, dtype=torch.float64)
    for h in range(m - 1):
        for i in range(h + 1, m):
            drift = _one_run(teacher, states[h], sigmas[[h, i]], method, extra_args) - states[i]
            for j in range(i + 1, m + 1):
                out = _one_run(teacher, states[h], sigmas[[h, i, j]], method, extra_args)
                ratio = float(sigmas[j] / sigmas[i])
                costs[h, i, j] = rms(out - ratio * drift, states[j])
        if progress is not None:
            progress(h + 1, m - 1)
    return costs


class TeacherDenoiser:
    """The reference D at every candidate sigma, whatever the state (teacher forcing); a
    call anywhere else is refused: the pair search is for methods that only use grid points."""

    def __init__(self, memo: ReferenceMemo):
        self.memo = memo

    def __call__(self, x: Tensor, sigma: Tensor, **extra_args: Any) -> Tensor:
        index = self.memo._index(sigma)
        if index is None or index not in self.memo.saved:
            raise RuntimeError(f"teacher-forced search: no reference D at sigma {float(sigma.flatten()[0]):.6g}")
        return self.memo.saved[index][1].clone()


def best_pair_grid(first: Tensor, costs: Tensor, steps: int) -> tuple[list[int], float]:
    """Like `best_grid` for a two-point multistep method: the first step costs first[j] (from
    candidate 0), every later step i -> j after h costs costs[h, i, j]. Exact dynamic
    programming over the last two grid points, O(steps * M^3)."""
    m = first.shape[0] - 1
    if costs.shape != (m + 1,) * 3:
        raise ValueError(f"costs must be [M + 1]^3 = {(m + 1,) * 3}, got {tuple(costs.shape)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= m:
        raise ValueError(f"steps must be an int in 1..{m} (the number of candidate intervals), got {steps!r}")
    index = torch.arange(m + 1)
    forward = (index[:, None, None] < index[None, :, None]) & (index[None, :, None] < index[None, None, :])
    costs = torch.where(forward, costs.double(), math.inf)  # only h < i < j is a step
    best = torch.full((m + 1, m + 1), math.inf, dtype=torch.float64)  # [previous, last]
    best[0, 1:] = first.double()[1:]
    came_from = []
    for _ in range(steps - 1):
        totals = best[:, :, None] + costs  # [h, i, j]
        best, argmin = totals.min(dim=0)  # -> [i, j]
        came_from.append(argmin)
    last = int(best[:, m].argmin())
    path = [m, last]
    for argmin in reversed(came_from):  # argmin[i, j]: the point before the last two (i, j)
        path.append(int(argmin[path[-1], path[-2]]))
    return path[::-1], float(best[:, m].min())


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
    costs = torch.where(torch.ones_like(costs, dtype=torch.bool).triu(1), costs.double(), math.inf)  # only i < j
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
    objective: str = "local"  # "local": teacher-forced step costs; "propagated": see optimal_propagated
    max_steps: int = DEFAULT_MAX_STEPS  # the largest step count a "propagated" search covers

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.objective == "propagated" and self.method not in PROPAGATED_METHODS:
            raise ValueError(f"the propagated objective supports {sorted(PROPAGATED_METHODS)}, got {self.method!r}")
        if not isinstance(self.substeps, int) or self.substeps < 1:
            raise ValueError(f"substeps must be an int >= 1, got {self.substeps!r}")
        candidate_sigmas(self.candidates)  # validates


@dataclass
class SearchRecord:
    """A finished search: the candidates, the best grid and its summed step cost for every
    step count 1..M (keys are str(steps), as JSON has them), and what the search cost."""

    model: str
    settings: dict
    sigmas: list[float]
    grids: dict[str, list[float]]
    totals: dict[str, float]
    nfe: int
    seconds: float

    def grid(self, steps: int) -> tuple[Tensor, float]:
        """(sigmas [steps + 1] from 1 to 0, float32; the grid's summed step cost)."""
        if str(steps) not in self.grids:
            raise ValueError(f"steps must be in 1..{self.max_steps} for this search, got {steps!r}")
        return torch.tensor(self.grids[str(steps)], dtype=torch.float32), self.totals[str(steps)]

    @property
    def intervals(self) -> int:
        return len(self.sigmas) - 1

    @property
    def max_steps(self) -> int:
        return max(int(steps) for steps in self.grids)

    def matches(self, model: str, method: str, cfg: float | None = None) -> bool:
        return (self.model == model and self.settings["method"] == method
                and (cfg is None or self.settings["description"].get("cfg") == cfg))


@dataclass
class Reference:
    """The reference solve of a search, shareable between solvers searched on the same batch."""

    memo: ReferenceMemo
    states: list[Tensor]
    sigmas: Tensor
    calls: int
    seconds: float
    candidates: int
    substeps: int


def reference(denoiser: Denoiser, x: Tensor, candidates: int = DEFAULT_CANDIDATES, substeps: int = DEFAULT_SUBSTEPS,
              extra_args: dict | None = None) -> Reference:
    """Step 2 of the module docstring: reference states at `candidate_sigmas(candidates)` from noise `x`."""
    sigmas = candidate_sigmas(candidates)
    memo = ReferenceMemo(denoiser, sigmas)
    start = time.perf_counter()
    with torch.no_grad():
        states = reference_states(memo, x, sigmas, substeps, {} if extra_args is None else extra_args)
    return Reference(memo, states, sigmas, memo.calls, time.perf_counter() - start, candidates, substeps)


def search(denoiser: Denoiser, x: Tensor, settings: SearchSettings, model: str = "", extra_args: dict | None = None,
           progress: Callable[[int, int], None] | None = None, shared: Reference | None = None) -> SearchRecord:
    """Run a search (steps 2 to 4 of the module docstring) from noise `x` at sigma = 1.

    Args:
        denoiser: D(x, sigma [B], **extra_args) with prompts and guidance inside.
        x: starting noise [B, ...], sigma = 1 (the calibration batch).
        settings: the solver and search resolution.
        model: the model's weights fingerprint (`weights_fingerprint`), recorded.
        progress: progress(done, total) while the costs are computed.
        shared: a `reference` of the same denoiser, noise and resolution, reused (its cost is
            still counted in the record, as the search needed it).
    """
    extra_args = {} if extra_args is None else extra_args
    if settings.method not in SEARCHABLE or settings.method in SEARCHED_AS:
        raise ValueError(f"search: method must be one of {sorted(set(SEARCHABLE) - set(SEARCHED_AS))} "
                         f"(see SEARCHED_AS), got {settings.method!r}")
    ref = shared or reference(denoiser, x, settings.candidates, settings.substeps, extra_args)
    if (ref.candidates, ref.substeps) != (settings.candidates, settings.substeps):
        raise ValueError(f"search: the shared reference has {ref.candidates} candidates x {ref.substeps} substeps, "
                         f"the settings {settings.candidates} x {settings.substeps}")
    memo, states, sigmas = ref.memo, ref.states, ref.sigmas
    calls_before, start = memo.calls, time.perf_counter()
    grids, totals = {}, {}
    with torch.no_grad():
        if settings.objective == "propagated":
            grids, totals, _ = propagated_grids(memo, states, sigmas, settings.method, settings.max_steps, extra_args,
                                                progress)
            solve = None
        elif settings.method in PAIR_METHODS:
            first = torch.tensor([math.inf] + [rms(_one_run(memo, states[0], sigmas[[0, j]], settings.method, extra_args),
                                                   states[j]) for j in range(1, len(sigmas))], dtype=torch.float64)
            costs = pair_step_costs(memo, states, sigmas, settings.method, extra_args, progress)
            solve = lambda steps: best_pair_grid(first, costs, steps)  # noqa: E731
        else:
            costs = step_costs(memo, states, sigmas, settings.method, extra_args, progress)
            solve = lambda steps: best_grid(costs, steps)  # noqa: E731
    for steps in range(1, len(sigmas)) if solve is not None else ():
        path, total = solve(steps)
        grids[str(steps)], totals[str(steps)] = [float(sigmas[k]) for k in path], total
    return SearchRecord(model=model, settings=asdict(settings), sigmas=sigmas.tolist(), grids=grids, totals=totals,
                        nfe=ref.calls + memo.calls - calls_before, seconds=ref.seconds + time.perf_counter() - start)


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


def default_objective(method: str) -> str:
    """"propagated" where it is supported (it scores the true end-point error), else "local"."""
    return "propagated" if method in PROPAGATED_METHODS else "local"


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
    compact = [asdict(r) for r in records]
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".partial", delete=False) as handle:
        json.dump({"records": compact}, handle, separators=(",", ":"))
        os.chmod(handle.name, 0o644)
    os.replace(handle.name, path)
