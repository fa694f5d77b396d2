"""Image editing with a flow: inversion (data -> noise) and FlowEdit, in seed time.

Seed convention (see `samplers/__init__`): t = 0 noise, t = 1 data, v = data - noise.
Every function takes a *generation* grid `ts` (ascending, ts[0] = 0 ... ts[-1] = 1, e.g.
`time_grid(steps)`), so the same grid serves inversion and the regeneration that undoes it.

- `invert`: integrate the ODE backwards along the reversed grid with any `METHODS` solver,
  or with "fireflow" (Deng et al. 2024, "FireFlow: Fast Inversion of Rectified Flow"): a
  midpoint step whose first stage reuses the previous step's midpoint velocity, second
  order for N + 1 velocity calls over N steps. `regenerate` runs the grid forwards with the
  same choice, so `regenerate(invert(x))` returns `x` up to both solvers' errors.
- `flow_edit`: FlowEdit (Kulikov et al., ICCV 2025), an ODE straight from the source image
  to the target prompt's distribution without inversion. Along the edited state Z, with
  fresh noise N per step and x_src the source image:
      Z_src(t) = t * x_src + (1 - t) * N,   Z_tar(t) = Z + Z_src(t) - x_src,
      dZ/dt    = mean over n_avg draws of [v_tar(Z_tar, t) - v_src(Z_src, t)],
  stepped with Euler from Z = x_src. In the paper's indexing (steps counted from the
  data end, T = steps) the ODE runs while n_min < index <= n_max: the first T - n_max
  steps are skipped, and the last n_min steps regenerate from the noised edited state
  with the target velocity alone.
- `flow_edit(..., relaxation=lam)`: the re-noised variant (this pack's; docs/editing.md has
  the measurements). The target branch sees the current edit Z noised like the source,
  Z_tar = t * Z + (1 - t) * N, and each step moves Z a fixed fraction `lam` towards the
  edited image the two predictions give, x_src + D_tar(Z_tar) - D_src(Z_src), with
  D(z, t) = z + (1 - t) v(z, t) the data prediction. In velocities:
      Z <- Z + lam * (1 - t) * (mean over n_avg of [v_tar(Z_tar, t) - v_src(Z_src, t)] - (Z - x_src)).
  FlowEdit's Euler ODE takes a weight (t1 - t0) / (1 - t0), small early, and its Z_tar
  carries the edit at full strength; on the bundled model its intermediate Z is a blend of
  old and new colour that the target prompt reads as a smaller object. With one prompt
  both branches see the same input and Z stays x_src; between two Gaussians with equal
  covariance the noise cancels again and the error to the exact translation shrinks by
  1 - lam * (1 - c) per step, c = t^2 s^2 / (t^2 s^2 + (1 - t)^2) for data variance s^2.
- `flow_edit(..., relaxation=lam, data_bound=k)`: the re-noised update with both data
  predictions clipped to +-k * max|x_src| (per image) before they are subtracted, the
  x0-clipping of diffusion samplers (Ho et al. 2020) scaled to the source so that it means
  the same in any latent space. Guidance extrapolates D far beyond any image where the two
  prompts disagree most (a background that changes everywhere); the clip stops that
  overshoot from growing the object (docs/editing.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .solvers import METHODS, Velocity, _validate_grid, integrate

INVERTIBLE_METHODS = tuple(name for name, method in METHODS.items() if method.variable == "t")
"""The pack's methods that step in seed time and so run either way along a grid; the
sigma-space (flow_*) methods step towards the image only."""

FIREFLOW = "fireflow"
INVERSION_METHODS: tuple[str, ...] = (*INVERTIBLE_METHODS, FIREFLOW)
"""Solvers `invert` and `regenerate` accept: the pack's seed-time methods plus FireFlow's reuse midpoint."""



@dataclass
class EditStats:
    """Velocity calls (`nfe`) and completed steps (`accepted`), added up over the calls it is passed to."""

    nfe: int = 0
    accepted: int = 0


NoiseSource = Callable[[], Tensor]
"""noise() -> a fresh standard normal tensor shaped like the latent (FlowEdit's draws)."""


def integrate_reuse_midpoint(velocity: Velocity, x: Tensor, ts: Tensor, *, stats: EditStats | None = None) -> Tensor:
    """FireFlow's solver along `ts` (either direction): N + 1 velocity calls for N intervals.

    Per interval h = t1 - t0: x_mid = x + h/2 * v_prev, v_mid = v(x_mid, t0 + h/2),
    x <- x + h * v_mid, v_prev <- v_mid; v_prev starts as v(x, ts[0]). Step arithmetic in
    fp32 (fp64 for fp64 input); returns a tensor shaped and typed like `x`.
    """
    grid = _validate_grid(ts)
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    stats = EditStats() if stats is None else stats
    work = torch.promote_types(x.dtype, torch.float32)

    def f(state: Tensor, t: float) -> Tensor:
        stats.nfe += 1
        return velocity(state.to(x.dtype), torch.full((x.shape[0],), t, dtype=work, device=x.device)).to(work)

    state = x.to(work, copy=True)
    v_prev = f(state, grid[0])
    for t0, t1 in zip(grid, grid[1:]):
        h = t1 - t0
        v_prev = f(state + 0.5 * h * v_prev, t0 + 0.5 * h)
        state = state + h * v_prev
        stats.accepted += 1
        if not torch.isfinite(state).all():
            raise FloatingPointError(f"fireflow: the state became non-finite at t={t1:.6g}; check the velocity and the grid")
    return state.to(x.dtype)


def _solve(velocity: Velocity, x: Tensor, ts: Tensor, method: str, stats: EditStats | None, **options) -> Tensor:
    if method == FIREFLOW:
        return integrate_reuse_midpoint(velocity, x, ts, stats=stats)
    if method not in INVERTIBLE_METHODS:
        raise ValueError(f"method must be one of {list(INVERSION_METHODS)}, got {method!r}")
    solution = integrate(velocity, x, ts, method, **options)
    if stats is not None:
        stats.nfe += solution.nfe
        stats.accepted += solution.accepted
    return solution.state


def _generation_grid(ts: Tensor) -> Tensor:
    grid = _validate_grid(ts)
    if grid[0] > grid[-1]:
        raise ValueError(f"ts must be the ascending generation grid (t = 0 noise -> 1 data), got {grid}")
    return ts


def invert(velocity: Velocity, x_data: Tensor, ts: Tensor, method: str = "euler", *,
           stats: EditStats | None = None, **options) -> Tensor:
    """The noise the flow maps to `x_data`: integrate from ts[-1] back to ts[0].

    Args:
        velocity: velocity(x, t) -> data - noise direction (guided, if the caller guides).
        x_data: the image latent [B, ...] at t = ts[-1].
        ts: the ascending generation grid; inversion runs it reversed.
        method: one of `INVERSION_METHODS`.
        stats: counts velocity calls.
        options: dopri5's rtol, atol, max_steps (see `integrate`).

    Returns:
        The latent at t = ts[0] (noise when ts[0] = 0), like `x_data`.
    """
    return _solve(velocity, x_data, torch.flip(_generation_grid(ts), (0,)), method, stats, **options)


def regenerate(velocity: Velocity, noise: Tensor, ts: Tensor, method: str = "euler", *,
               stats: EditStats | None = None, **options) -> Tensor:
    """Generation along the ascending grid `ts` with any of `INVERSION_METHODS` (undoes `invert`)."""
    return _solve(velocity, noise, _generation_grid(ts), method, stats, **options)


def edit_window(steps: int, n_max: int, n_min: int) -> tuple[int, int]:
    """(first edited step, first regenerated step) of a `steps`-interval grid for FlowEdit's
    n_max / n_min (paper indexing, counted from the data end): steps [0, T - n_max) are
    skipped, [T - n_max, T - n_min) follow the edit ODE, [T - n_min, T) regenerate."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0 <= n_min < n_max <= steps:
        raise ValueError(f"need 0 <= n_min < n_max <= steps, got n_min={n_min}, n_max={n_max}, steps={steps}")
    return steps - n_max, steps - n_min


def flow_edit(
    v_source: Velocity,
    v_target: Velocity,
    x_source: Tensor,
    ts: Tensor,
    noise: NoiseSource,
    *,
    n_max: int,
    n_min: int = 0,
    n_avg: int = 1,
    method: str = "euler",
    relaxation: float | None = None,
    data_bound: float | None = None,
    stats: EditStats | None = None,
    callback: Callable[[int, float, Tensor], None] | None = None,
) -> Tensor:
    """FlowEdit from `x_source` (t = 1) towards the target velocity's distribution.

    Args:
        v_source, v_target: guided velocities for the source and target prompts.
        x_source: the source image latent [B, ...].
        ts: ascending generation grid of T + 1 times (T = steps), ts[-1] = 1.
        noise: draws fresh standard normal noise shaped like `x_source` (n_avg per step,
            one more for the regeneration when n_min > 0).
        n_max, n_min, n_avg: FlowEdit's window and noise averages (see the module docstring).
        method: solver for the n_min regeneration steps (`INVERSION_METHODS`).
        relaxation: None for the paper's Euler ODE; lam in (0, 1] for the re-noised update
            (module docstring).
        data_bound: re-noised update only: clip both data predictions to +-data_bound times
            the source's largest magnitude, per image (None: no clip; an all-zero image is
            not clipped).
        stats: counts velocity calls of both prompts together.
        callback: callback(i, t, Z) after each edit or regeneration step i ending at t.

    Returns:
        The edited latent, shaped and typed like `x_source`. With v_target = v_source and
        n_min = 0 it is `x_source` exactly.
    """
    grid = [float(t) for t in _generation_grid(ts)]
    first, regen = edit_window(len(grid) - 1, n_max, n_min)
    if n_avg < 1:
        raise ValueError(f"n_avg must be >= 1, got {n_avg}")
    if relaxation is not None and not 0 < relaxation <= 1:
        raise ValueError(f"relaxation must be in (0, 1] (or None for the paper's ODE), got {relaxation}")
    if data_bound is not None and (relaxation is None or not data_bound > 0):
        raise ValueError(f"data_bound must be > 0 and goes with the re-noised update (a relaxation), got "
                         f"data_bound={data_bound}, relaxation={relaxation}")
    stats = EditStats() if stats is None else stats
    work = torch.promote_types(x_source.dtype, torch.float32)
    src = x_source.to(work)
    batch = x_source.shape[0]

    def call(velocity: Velocity, state: Tensor, t: float) -> Tensor:
        stats.nfe += 1
        return velocity(state.to(x_source.dtype), torch.full((batch,), t, dtype=work, device=x_source.device)).to(work)

    bound = None
    if data_bound is not None:
        peak = src.abs().flatten(1).amax(1).view(batch, *[1] * (src.dim() - 1))
        bound = torch.where(peak > 0, data_bound * peak, torch.inf)

    def data(velocity: Velocity, state: Tensor, t: float) -> Tensor:
        estimate = state + (1 - t) * call(velocity, state, t)
        return estimate if bound is None else estimate.clamp(-bound, bound)

    z = src.clone()
    for i in range(first, regen):
        t0, t1 = grid[i], grid[i + 1]
        delta = torch.zeros_like(z)
        for _ in range(n_avg):
            n = noise().to(device=src.device, dtype=work)
            z_src = t0 * src + (1 - t0) * n
            if relaxation is None:
                delta += call(v_target, z + (z_src - src), t0) - call(v_source, z_src, t0)
            else:  # D_tar - D_src: the edit the two predictions give
                delta += data(v_target, t0 * z + (1 - t0) * n, t0) - data(v_source, z_src, t0)
        if relaxation is None:
            z = z + (t1 - t0) * delta / n_avg
        else:
            z = z + relaxation * (src + delta / n_avg - z)
        stats.accepted += 1
        if not torch.isfinite(z).all():
            raise FloatingPointError(f"flow_edit: the edited latent became non-finite at step {i} (t={t1:.6g})")
        if callback is not None:
            callback(i, t1, z)
    if regen < len(grid) - 1:
        t_r = grid[regen]
        z = z + (1 - t_r) * (noise().to(device=src.device, dtype=work) - src)
        tail = torch.tensor(grid[regen:], dtype=torch.float64)
        z = _solve(v_target, z.to(x_source.dtype), tail, method, stats).to(work)
        if callback is not None:
            callback(len(grid) - 2, grid[-1], z)
    return z.to(x_source.dtype)
