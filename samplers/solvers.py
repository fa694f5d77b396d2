"""ODE solvers for dx/dt = velocity(x, t) in seed time (see `samplers/__init__`).

A fixed-step method is one step function `step(f, x, t0, t1, k1) -> x` with `.order`,
`.nfe` (velocity calls per step, counting k1 = f(x, t0), which `integrate` evaluates
first so the callback gets it for free) and `.evaluates_end` (whether a stage sits at t1).
`METHODS` names them; `dopri5` is the adaptive one (`.adaptive`), with its own loop.

Memory contract: `x` passed to a step is `integrate`'s private fp32 (or fp64) state and is
updated in place; stage states are formed in that same buffer and undone, so a step holds
only the stage velocities it needs. Peak latent-sized buffers inside `integrate` (state and
velocity outputs included, the caller's `x` and the velocity's own temporaries excluded;
fp32 input, no callback): euler 2, midpoint 3, heun 3, rk3 4, rk4 5, dopri5 12. None of these
grow with the number of steps. A callback adds one transient buffer (the data estimate);
fp16/bf16 input adds the low-precision copy passed to the velocity and the upcast output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from torch import Tensor

from .conventions import data_from_velocity

Velocity = Callable[[Tensor, Tensor], Tensor]
"""velocity(x, t) -> dx/dt: x [batch, ...] in the input dtype, t [batch] in the working dtype."""

StepCallback = Callable[[int, float, Tensor, Tensor], None]
"""callback(i, t, x, data): step index, its start time, the state there and the data estimate
x + (1 - t) * v. Both tensors are in the working dtype; `x` is the live state (clone to keep)."""


class Stage(Protocol):
    """What a step function sees: f(x, t) for a Python float t, returning the working dtype."""

    def __call__(self, x: Tensor, t: float) -> Tensor: ...


@dataclass
class SolverStats:
    """Counters `integrate` adds to: velocity calls, accepted and rejected steps."""

    nfe: int = 0
    accepted: int = 0
    rejected: int = 0


def solver(*, order: int, nfe: int | None, evaluates_end: bool, adaptive: bool = False) -> Callable[[Callable], Callable]:
    """Records a method's order, its velocity calls per step (None: adaptive), whether a stage
    sits at the interval's end, and whether it is adaptive, as attributes on the function."""

    def mark(fn: Callable) -> Callable:
        fn.order, fn.nfe, fn.evaluates_end, fn.adaptive = order, nfe, evaluates_end, adaptive
        return fn

    return mark


@solver(order=1, nfe=1, evaluates_end=False)
def euler_step(f: Stage, x: Tensor, t0: float, t1: float, k1: Tensor) -> Tensor:
    """Explicit Euler: x + h * f(x, t0). One velocity call (k1)."""
    return x.add_(k1, alpha=t1 - t0)


@solver(order=2, nfe=2, evaluates_end=False)
def midpoint_step(f: Stage, x: Tensor, t0: float, t1: float, k1: Tensor) -> Tensor:
    """Explicit midpoint (RK2): x + h * f(x + h/2 * k1, t0 + h/2). Two velocity calls."""
    h = t1 - t0
    k2 = f(x.add_(k1, alpha=h / 2), t0 + h / 2)
    return x.add_(k1, alpha=-h / 2).add_(k2, alpha=h)


@solver(order=2, nfe=2, evaluates_end=True)
def heun_step(f: Stage, x: Tensor, t0: float, t1: float, k1: Tensor) -> Tensor:
    """Heun (explicit trapezoid): x + h/2 * (k1 + f(x + h * k1, t1)). Two velocity calls."""
    h = t1 - t0
    k2 = f(x.add_(k1, alpha=h), t1)
    return x.add_(k1, alpha=-h / 2).add_(k2, alpha=h / 2)


@solver(order=3, nfe=3, evaluates_end=False)
def rk3_step(f: Stage, x: Tensor, t0: float, t1: float, k1: Tensor) -> Tensor:
    """Ralston's third-order RK (c = 0, 1/2, 3/4; b = 2/9, 1/3, 4/9). Three velocity calls,
    none at t1, which is why the ComfyUI bridge ends RK4 and dopri5 with it."""
    h = t1 - t0
    k2 = f(x.add_(k1, alpha=h / 2), t0 + h / 2)
    k3 = f(x.add_(k1, alpha=-h / 2).add_(k2, alpha=3 * h / 4), t0 + 3 * h / 4)
    return x.add_(k1, alpha=2 * h / 9).add_(k2, alpha=h / 3 - 3 * h / 4).add_(k3, alpha=4 * h / 9)


@solver(order=4, nfe=4, evaluates_end=True)
def rk4_step(f: Stage, x: Tensor, t0: float, t1: float, k1: Tensor) -> Tensor:
    """Classic fourth-order Runge-Kutta. Four velocity calls, the last at t1."""
    h = t1 - t0
    k2 = f(x.add_(k1, alpha=h / 2), t0 + h / 2)
    acc = torch.add(k1, k2, alpha=2)
    k3 = f(x.add_(k1, alpha=-h / 2).add_(k2, alpha=h / 2), t0 + h / 2)
    acc.add_(k3, alpha=2)
    x.add_(k2, alpha=-h / 2).add_(k3, alpha=h)
    del k2
    k4 = f(x, t1)
    return x.add_(k3, alpha=-h).add_(acc.add_(k4), alpha=h / 6)


# Dormand-Prince 5(4) (Dormand & Prince 1980): nodes, stage weights, 5th-order weights
# (= the last stage row, so the last stage is the next step's first: FSAL) and the
# difference between the 5th- and 4th-order weights for the error estimate.
DOPRI5_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
DOPRI5_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
DOPRI5_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)


def _combine(x: Tensor | None, h: float, weights: tuple[float, ...], ks: list[Tensor]) -> Tensor:
    """x + h * sum(w * k) (x = None: zero), in a new buffer."""
    out = torch.zeros_like(ks[0]) if x is None else x.clone()
    for w, k in zip(weights, ks):
        if w:
            out.add_(k, alpha=h * w)
    return out


def _error_norm(err: Tensor, x0: Tensor, x1: Tensor, rtol: float, atol: float) -> float:
    """Hairer's scaled RMS norm of the error estimate: <= 1 means the step is accepted."""
    scale = x0.abs()
    torch.maximum(scale, x1.abs(), out=scale).mul_(rtol).add_(atol)
    return float(err.div_(scale).pow_(2).mean().sqrt())


def _initial_step(f: Stage, x: Tensor, t0: float, k1: Tensor, span: float, rtol: float, atol: float) -> float:
    """Hairer, Norsett & Wanner's starting step size |h| (II.4) for order 5: one velocity call."""
    scale = x.abs().mul_(rtol).add_(atol)
    d0 = float((x / scale).pow(2).mean().sqrt())
    d1 = float((k1 / scale).pow(2).mean().sqrt())
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    h0 = min(h0, abs(span))
    k2 = f(torch.add(x, k1, alpha=math.copysign(h0, span)), t0 + math.copysign(h0, span))
    d2 = float(((k2 - k1) / scale).pow(2).mean().sqrt()) / h0
    h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** (1 / 5)
    return min(100 * h0, h1, abs(span))


def _check_finite(state: Tensor, i: int, t: float) -> None:
    # One reduction and one sync per step; a finite state whose sum overflows has diverged too.
    if not math.isfinite(float(state.sum())):
        raise FloatingPointError(f"integrate: the state became non-finite at step {i} (t={t:.6g}); check the velocity and the grid")


@solver(order=5, nfe=None, evaluates_end=True, adaptive=True)
def dopri5(
    f: Stage,
    x: Tensor,
    t0: float,
    t1: float,
    stats: SolverStats,
    *,
    rtol: float,
    atol: float,
    max_steps: int,
    on_accept: Callable[[int, float, Tensor, Tensor], None] | None = None,
) -> Tensor:
    """Adaptive Dormand-Prince 5(4) from (t0, x) to t1 with local extrapolation and FSAL.

    Step size control: error norm e (Hairer's scaled RMS), accept if e <= 1, next
    h = h * clamp(0.9 * e^(-1/5), 0.2, 10). `on_accept(i, t, x, k1)` runs for each accepted
    step with the state where it starts. Returns the state at t1 (a new tensor).
    """
    direction = 1.0 if t1 > t0 else -1.0
    k1 = f(x, t0)
    h = _initial_step(f, x, t0, k1, t1 - t0, rtol, atol)
    t, accepted, rejected = t0, 0, 0
    while direction * (t1 - t) > 0:
        if accepted + rejected >= max_steps:
            raise RuntimeError(f"dopri5: no convergence within max_steps={max_steps} (t={t:.6g}); raise rtol/atol or max_steps")
        last = h >= abs(t1 - t) * (1 - 1e-12)
        step = direction * abs(t1 - t) if last else direction * h
        t_new = t1 if last else t + step
        ks = [k1]
        for c, row in zip(DOPRI5_C[1:6], DOPRI5_A[1:6]):
            ks.append(f(_combine(x, step, row, ks), t_new if c == 1.0 else t + c * step))
        x_new = _combine(x, step, DOPRI5_A[6], ks)
        ks.append(f(x_new, t_new))
        error = _error_norm(_combine(None, step, DOPRI5_E, ks), x, x_new, rtol, atol)
        if error <= 1.0:
            if on_accept is not None:
                on_accept(accepted, t, x, k1)
            _check_finite(x_new, accepted, t_new)
            accepted += 1
            stats.accepted += 1
            t, x, k1 = t_new, x_new, ks[6]
        else:
            rejected += 1
            stats.rejected += 1
        del ks, x_new
        factor = 10.0 if error == 0 else 0.9 * error ** -0.2 if math.isfinite(error) else 0.2
        h = abs(step) * min(10.0, max(0.2, factor))
        if h <= 4 * math.ulp(max(abs(t), 1.0)):
            raise FloatingPointError(f"dopri5: step size underflow at step {accepted} (t={t:.6g}): non-finite or stiff velocity")
    return x


METHODS: dict[str, Callable] = {
    "euler": euler_step,
    "midpoint": midpoint_step,
    "heun": heun_step,
    "rk3": rk3_step,
    "rk4": rk4_step,
    "dopri5": dopri5,
}
"""Solver name -> step function (fixed step) or adaptive integrator (`dopri5`)."""

ADAPTIVE = frozenset(name for name, method in METHODS.items() if method.adaptive)


def nfe_for(method: str, steps: int) -> int:
    """Velocity calls a fixed-step `method` makes over `steps` intervals (nfe per step * steps)."""
    if method not in METHODS or method in ADAPTIVE:
        raise ValueError(f"nfe_for: method must be a fixed-step one of {sorted(set(METHODS) - ADAPTIVE)}, got {method!r}")
    return METHODS[method].nfe * steps


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


def integrate(
    velocity: Velocity,
    x: Tensor,
    ts: Tensor,
    method: str = "euler",
    *,
    callback: StepCallback | None = None,
    stats: SolverStats | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 10_000,
) -> Tensor:
    """Integrate dx/dt = velocity(x, t) along the grid `ts` in seed time.

    Args:
        velocity: velocity(x, t) -> dx/dt with x shaped like `x` (in `x.dtype`) and t of shape
            [batch] (fp32, fp64 for fp64 input). It must return a tensor it does not reuse and
            must not keep or modify `x`.
        x: start state [batch, ...] (any latent rank, any float dtype and device); not modified.
        ts: 1-D strictly monotonic times; ascending integrates noise -> data (generation),
            descending data -> noise (inversion). `dopri5` uses only ts[0] and ts[-1].
        method: a name in `METHODS`: euler (N velocity calls for N intervals), midpoint (2N),
            heun (2N), rk3 (3N), rk4 (4N) or dopri5 (adaptive; see `stats`).
        callback: callback(i, t, x, data) once per (accepted) step, before it is taken.
        stats: a `SolverStats` to add velocity calls and accepted/rejected steps to.
        rtol, atol, max_steps: dopri5's tolerances and its cap on attempted steps.

    Returns:
        The state at ts[-1], shaped and typed like `x`. Step arithmetic runs in fp32 (fp64
        for fp64 input).

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
    stats = SolverStats() if stats is None else stats
    work = torch.promote_types(x.dtype, torch.float32)
    batch = x.shape[0]

    def f(state: Tensor, t: float) -> Tensor:
        stats.nfe += 1
        v = velocity(state.to(x.dtype), torch.full((batch,), t, dtype=work, device=x.device))
        if v.data_ptr() == state.data_ptr():
            v = v.clone()  # an output aliasing our state would change under the in-place update
        return v.to(work)

    def report(i: int, t: float, state: Tensor, k1: Tensor) -> None:
        if callback is not None:
            callback(i, t, state, data_from_velocity(state, k1, t))

    if method in ADAPTIVE:
        # No name keeps the start state: dopri5 releases it once it has moved on.
        state = dopri5(f, x.to(work, copy=True), grid[0], grid[-1], stats, rtol=rtol, atol=atol, max_steps=max_steps, on_accept=report)
        return state.to(x.dtype)
    step = METHODS[method]
    state = x.to(work, copy=True)
    for i, (t0, t1) in enumerate(zip(grid, grid[1:])):
        k1 = f(state, t0)
        report(i, t0, state, k1)
        step(f, state, t0, t1, k1)
        del k1
        stats.accepted += 1
        _check_finite(state, i, t1)
    return state.to(x.dtype)

