"""The solver engine: `integrate` runs any method record of `samplers.methods` in seed time.

Convention in `samplers/__init__` (t = 0 noise, t = 1 data, v = dx/dt, sigma = 1 - t). A method
is data, not a loop: a Runge-Kutta tableau (textbook methods, velocity in t), a plan of
data-prediction points (flow-aware methods, exact linear part in sigma, `samplers.exponential`)
or the adaptive dopri5 with dense output (`samplers.dopri5`). Three small runners execute them.

Memory contract: the state is `integrate`'s private fp32 (or fp64) copy, updated in place;
tableau stages are formed in that same buffer and undone, so a step holds only the stage
velocities it still needs. Peak latent-sized buffers inside `integrate` (state and velocity
outputs included, the caller's `x` and the velocity's own temporaries excluded; fp32 input,
no callback, no trajectory): see `BUFFERS`. None of these grow with the number of steps.
A callback adds one transient buffer (the data estimate); a trajectory keeps two per grid
point; fp16/bf16 input adds the low-precision copy passed to the velocity and the upcast output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .conventions import data_from_velocity
from .dopri5 import dopri5
from .exponential import step_weights
from .methods import ADAPTIVE, METHODS, Method, Tableau

Velocity = Callable[[Tensor, Tensor], Tensor]
"""velocity(x, t) -> dx/dt: x [batch, ...] in the input dtype, t [batch] in the working dtype."""

StepCallback = Callable[[int, float, Tensor, Tensor], None]
"""callback(i, t, x, data) at grid point i (< len(ts) - 1), before the step from it: its time,
the state there and the data estimate x + (1 - t) * v. Both in the working dtype; `x` is the
live state (clone to keep). Every method reports every grid point exactly once, in order."""

BUFFERS = {"euler": 2, "midpoint": 3, "heun": 3, "rk3": 4, "rk4": 5, "dopri5": 12,
           "flow_midpoint": 4, "flow_2m": 3, "flow_3m": 4, "flow_reuse": 4}
"""Peak latent-sized buffers per method (the memory contract above)."""


@dataclass(frozen=True)
class Trajectory:
    """The solution at each grid point: ts [N + 1] (fp64), states [N + 1, *x.shape] and data
    estimates [N, *x.shape] at ts[:-1] (where the steps start), both in x's dtype. A method
    that does not call the model at a grid point (flow_reuse, dopri5 between its own steps)
    reports its best estimate there: the last stage's data estimate, or the dense output."""

    ts: Tensor
    states: Tensor
    data: Tensor


@dataclass(frozen=True)
class Solution:
    """What `integrate` returns: the final state (like x), model calls (nfe), accepted and
    rejected steps (rejected only for adaptive methods) and, on request, the trajectory."""

    state: Tensor
    nfe: int
    accepted: int
    rejected: int
    trajectory: Trajectory | None = None


def _check_finite(state: Tensor, i: int, t: float) -> None:
    # One reduction and one sync per step; a finite state whose sum overflows has diverged too.
    if not math.isfinite(float(state.sum())):
        raise FloatingPointError(f"integrate: the state became non-finite at step {i} (t={t:.6g}); check the velocity and the grid")


def _validate_grid(ts: Tensor) -> list[float]:
    if not isinstance(ts, Tensor) or ts.ndim != 1 or ts.numel() < 2:
        raise ValueError(f"ts must be a 1-D tensor of at least 2 times, got {ts!r}")
    grid = [float(t) for t in ts.detach().double().cpu()]
    if not all(math.isfinite(t) for t in grid):
        raise ValueError(f"ts must be finite, got {grid}")
    steps = [b - a for a, b in zip(grid, grid[1:])]
    if not (all(h > 0 for h in steps) or all(h < 0 for h in steps)):
        raise ValueError(f"ts must be strictly monotonic (ascending = generation, descending = inversion), got {grid}")
    return grid


def _coefficient(row: tuple[float, ...], j: int) -> float:
    return row[j] if j < len(row) else 0.0


def _shift(x: Tensor, h: float, ks: list[Tensor | None], have: list[float], want: tuple[float, ...]) -> None:
    """Move x from x_start + h * sum(have_j k_j) to x_start + h * sum(want_j k_j) in place
    (a row shorter than `have` has zeros for the remaining velocities)."""
    for j in range(len(have)):
        target = _coefficient(want, j)
        if target != have[j]:
            x.add_(ks[j], alpha=h * (target - have[j]))
            have[j] = target


def rk_step(f: Callable[[Tensor, float], Tensor], x: Tensor, t0: float, t1: float, k1: Tensor, tableau: Tableau) -> None:
    """One explicit Runge-Kutta step of `tableau` from (t0, x) to t1, x updated in place; k1 = f(x, t0).

    Stage states are formed in x and undone; a stage velocity is dropped once no later row
    or b uses it. A final update by a single velocity is x + (h b) * k, computed as ComfyUI's
    euler computes x + d * dt (not fused), so euler is bit-identical to it.
    """
    h = t1 - t0
    ks: list[Tensor | None] = [k1]
    have = [0.0]
    rows = [*tableau.a[1:], tableau.b]
    for i in range(1, len(tableau.c)):
        _shift(x, h, ks, have, tableau.a[i])
        ks.append(f(x, t0 + tableau.c[i] * h))
        have.append(0.0)
        for j in range(len(ks)):
            if all(_coefficient(row, j) == have[j] for row in rows[i:]):
                ks[j] = None
    changed = [j for j in range(len(have)) if _coefficient(tableau.b, j) != have[j]]
    if len(changed) == 1:
        j = changed[0]
        k, ks[j] = ks[j], None
        x.add_(k.mul_(h * (_coefficient(tableau.b, j) - have[j])))
    else:
        _shift(x, h, ks, have, tableau.b)


def _data_point(f: Callable[[Tensor, float], Tensor], x: Tensor, t: float) -> Tensor:
    """D(x, sigma) = x + sigma * v(x, t) at sigma = 1 - t, in a new buffer."""
    return f(x, t).mul_(1 - t).add_(x)


def _data_combine(out: Tensor | None, x: Tensor, s_from: float, s_to: float, points: list[tuple[float, Tensor]]) -> Tensor:
    """out = exponential step of x from s_from to s_to with the polynomial through `points`."""
    ratio, weights = step_weights(s_from, s_to, [s for s, _ in points])
    out = torch.mul(x, ratio) if out is None else out.mul_(ratio)
    for w, (_, d) in zip(weights, points):
        out.add_(d, alpha=w)
    return out


def run_data_method(
    f: Callable[[Tensor, float], Tensor],
    x: Tensor,
    grid: list[float],
    method: Method,
    report: StepCallback,
) -> int:
    """A flow-aware method (`samplers.methods`) over `grid` in seed time; x updated in place.
    Returns the steps taken."""
    points: list[tuple[float, Tensor]] = []
    keep = method.history if method.kind == "multistep" else int(method.reuse_stage)
    for i, (t0, t1) in enumerate(zip(grid, grid[1:])):
        s0, s1 = 1 - t0, 1 - t1
        if not (method.reuse_stage and points):
            points.append((s0, _data_point(f, x, t0)))
        report(i, t0, x, points[-1][1])
        for c in method.stages_on(i, s1):
            s = s0 + c * (s1 - s0)
            stage = _data_combine(None, x, s0, s, points[-max(1, method.order - 1):])
            points.append((s, _data_point(f, stage, 1 - s)))
            del stage
        _data_combine(x, x, s0, s1, points[-method.order:])
        points = points[-keep:] if keep else []
        _check_finite(x, i, t1)
    return len(grid) - 1


def integrate(
    velocity: Velocity,
    x: Tensor,
    ts: Tensor,
    method: str = "euler",
    *,
    callback: StepCallback | None = None,
    trajectory: bool = False,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 10_000,
) -> Solution:
    """Integrate dx/dt = velocity(x, t) along the grid `ts` in seed time.

    Args:
        velocity: velocity(x, t) -> dx/dt with x shaped like `x` (in `x.dtype`) and t of shape
            [batch] (fp32, fp64 for fp64 input). It must return a tensor it does not reuse and
            must not keep or modify `x`.
        x: start state [batch, ...] (any latent rank, any float dtype and device); not modified.
        ts: 1-D strictly monotonic times; ascending integrates noise -> data (generation),
            descending data -> noise (inversion). dopri5 steps from ts[0] to ts[-1] on its own
            grid and reports at every ts[i] by dense output. Flow-aware methods need
            sigma = 1 - t > 0 where each interval starts (they never call the model at sigma = 0).
        method: a name in `METHODS` (`samplers.methods` documents each and its model calls).
        callback: callback(i, t, x, data) once per grid point before its step (`StepCallback`).
        trajectory: also return the states and data estimates at every grid point.
        rtol, atol, max_steps: dopri5's tolerances and its cap on attempted steps.

    Returns:
        A `Solution`: the state at ts[-1] shaped and typed like `x` (step arithmetic in fp32,
        fp64 for fp64 input), the model calls, accepted/rejected steps, the trajectory.

    Raises:
        ValueError: unknown method or a bad grid. FloatingPointError: the state became
            non-finite (naming the step and t); RuntimeError: dopri5 exceeded max_steps.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    grid = _validate_grid(ts)
    if not (math.isfinite(rtol) and rtol > 0 and math.isfinite(atol) and atol >= 0):
        raise ValueError(f"need rtol > 0 and atol >= 0, got rtol={rtol}, atol={atol}")
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    spec = METHODS[method]
    if spec.variable == "sigma" and any(t >= 1 for t in grid[:-1]):
        raise ValueError(
            f"{method} steps in data-prediction form, which is singular where sigma = 1 - t <= 0; "
            f"its intervals must start at t < 1, got {grid}. Invert from data with a textbook method (e.g. euler)."
        )
    work = torch.promote_types(x.dtype, torch.float32)
    batch = x.shape[0]
    nfe = 0

    def f(state: Tensor, t: float) -> Tensor:
        nonlocal nfe
        nfe += 1
        v = velocity(state.to(x.dtype), torch.full((batch,), t, dtype=work, device=x.device))
        if v.data_ptr() == state.data_ptr() or v.data_ptr() == x.data_ptr():
            v = v.clone()  # an output aliasing a state would change under the in-place updates
        return v.to(work)

    states, estimates = [], []

    def report(i: int, t: float, state: Tensor, data: Tensor) -> None:
        if callback is not None:
            callback(i, t, state, data)
        if trajectory:
            states.append(state.to(x.dtype, copy=True))
            estimates.append(data.to(x.dtype, copy=True))

    def report_velocity(i: int, t: float, state: Tensor, v: Tensor) -> None:
        if callback is not None or trajectory:
            report(i, t, state, data_from_velocity(state, v, t))

    rejected = 0
    if spec.kind == ADAPTIVE:
        # No name keeps the start state: dopri5 releases it once it has moved on.
        state, accepted, rejected = dopri5(f, x.to(work, copy=True), grid, rtol=rtol, atol=atol, max_steps=max_steps,
                                           report=report_velocity if callback is not None or trajectory else None,
                                           check=_check_finite)
    elif spec.variable == "sigma":
        state = x.to(work, copy=True)
        accepted = run_data_method(f, state, grid, spec, report)
    else:
        state = x.to(work, copy=True)
        for i, (t0, t1) in enumerate(zip(grid, grid[1:])):
            k1 = f(state, t0)
            report_velocity(i, t0, state, k1)
            rk_step(f, state, t0, t1, k1, spec.tableau)
            del k1
            _check_finite(state, i, t1)
        accepted = len(grid) - 1
    final = state.to(x.dtype)
    path = None
    if trajectory:
        states.append(final.clone())
        path = Trajectory(torch.tensor(grid, dtype=torch.float64), torch.stack(states), torch.stack(estimates))
    return Solution(final, nfe, accepted, rejected, path)
