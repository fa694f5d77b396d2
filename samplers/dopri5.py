"""Adaptive Dormand-Prince 5(4) with dense output, in seed time (see `samplers/__init__`).

Dormand & Prince (1980): seven stages, local extrapolation (the 5th-order solution is kept),
FSAL (the last stage is the next step's first). Step size control: Hairer's scaled RMS error
norm e, accept if e <= 1, next h = h * clamp(0.9 * e^(-1/5), 0.2, 10). Dense output: a quartic
through the step's ends, their velocities and a 4th-order midpoint value (Shampine 1986;
Hairer, Norsett & Wanner II.6), so the solution is reported at every requested time without
shortening steps to hit them.
"""

from __future__ import annotations

import math
from typing import Callable, Protocol

import torch
from torch import Tensor

C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
"""Stage rows; the last row is the 5th-order solution (its stage is the next step's first)."""
E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)
"""5th- minus 4th-order weights: the error estimate."""
MID = (
    6025192743 / 30085553152 / 2, 0.0, 51252292925 / 65400821598 / 2, -2691868925 / 45128329728 / 2,
    187940372067 / 1594534317056 / 2, -1776094331 / 19743644256 / 2, 11237099 / 235043384 / 2,
)
"""Weights of the 4th-order solution at the step's midpoint (Shampine's dense output)."""


class Stage(Protocol):
    def __call__(self, x: Tensor, t: float) -> Tensor: ...


GridReport = Callable[[int, float, Tensor, Tensor], None]
"""report(i, t_i, x_i, v_i) at requested time i: state and velocity there (read, do not keep)."""


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


def dense(x0: Tensor, x1: Tensor, k0: Tensor, k1: Tensor, mid: Tensor, h: float, theta: float) -> tuple[Tensor, Tensor]:
    """State and velocity at t0 + theta * h from the quartic p with p(0) = x0, p(1) = x1,
    p(1/2) = mid, p'(0) = h k0, p'(1) = h k1 (theta in [0, 1])."""
    a = 2 * h * (k1 - k0) - 8 * (x1 + x0) + 16 * mid
    b = h * (5 * k0 - 3 * k1) + 18 * x0 + 14 * x1 - 32 * mid
    c = h * (k1 - 4 * k0) - 11 * x0 - 5 * x1 + 16 * mid
    state = (((a * theta + b) * theta + c) * theta + h * k0) * theta + x0
    velocity = (((4 * a * theta + 3 * b) * theta + 2 * c) * theta) / h + k0
    return state, velocity


def dopri5(
    f: Stage,
    x: Tensor,
    grid: list[float],
    *,
    rtol: float,
    atol: float,
    max_steps: int,
    report: GridReport | None,
    check: Callable[[Tensor, int, float], None],
) -> tuple[Tensor, int, int]:
    """Integrate from (grid[0], x) to grid[-1]; `report(i, ...)` at each grid[i], i < len - 1
    (None: no dense output is formed).

    `x` is the private working state (it is not modified; the result is a new tensor).
    Returns (state at grid[-1], accepted steps, rejected steps). Raises RuntimeError past
    `max_steps` attempts and FloatingPointError on step size underflow or a non-finite state.
    """
    t0, t1 = grid[0], grid[-1]
    direction = 1.0 if t1 > t0 else -1.0
    k1 = f(x, t0)
    if report is not None:
        report(0, t0, x, k1)
    pending = 1 if report is not None else len(grid)  # next grid index to report
    h = _initial_step(f, x, t0, k1, t1 - t0, rtol, atol)
    t, accepted, rejected = t0, 0, 0
    while direction * (t1 - t) > 0:
        if accepted + rejected >= max_steps:
            raise RuntimeError(f"dopri5: no convergence within max_steps={max_steps} (t={t:.6g}); raise rtol/atol or max_steps")
        last = h >= abs(t1 - t) * (1 - 1e-12)
        step = direction * abs(t1 - t) if last else direction * h
        t_new = t1 if last else t + step
        ks = [k1]
        for c, row in zip(C[1:6], A[1:6]):
            ks.append(f(_combine(x, step, row, ks), t_new if c == 1.0 else t + c * step))
        x_new = _combine(x, step, A[6], ks)
        ks.append(f(x_new, t_new))
        error = _error_norm(_combine(None, step, E, ks), x, x_new, rtol, atol)
        if error <= 1.0:
            check(x_new, accepted, t_new)
            accepted += 1
            while pending < len(grid) - 1 and direction * (t_new - grid[pending]) >= 0:
                mid = _combine(x, step, MID, ks)
                theta = (grid[pending] - t) / step
                report(pending, grid[pending], *dense(x, x_new, k1, ks[6], mid, step, theta))
                pending += 1
            t, x, k1 = t_new, x_new, ks[6]
        else:
            rejected += 1
        del ks, x_new
        factor = 10.0 if error == 0 else 0.9 * error ** -0.2 if math.isfinite(error) else 0.2
        h = abs(step) * min(10.0, max(0.2, factor))
        if h <= 4 * math.ulp(max(abs(t), 1.0)):
            raise FloatingPointError(f"dopri5: step size underflow at step {accepted} (t={t:.6g}): non-finite or stiff velocity")
    return x, accepted, rejected
