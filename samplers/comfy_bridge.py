"""ComfyUI's sampler interface over `integrate`: k-diffusion's signature, seed time inside.

ComfyUI calls `sample_flow(model, x, sigmas, extra_args, callback, disable, **extra_options)`
with `x` already noise-scaled and `model(x, sigma * ones[B], **extra_args)` returning the
data estimate D. The bridge integrates v(x, t) = (D(x, 1 - t) - x) / (1 - t) over
t = 1 - sigmas and reports each step through ComfyUI's callback dict.

The end at sigma = 0: D gives no velocity there (0 / 0). Methods with no stage at the end
of an interval (euler, midpoint, rk3) run unchanged, like ComfyUI's euler, whose last
evaluation is at sigmas[-2]. The others take the last interval with a rule that has no
stage at its end and keeps their global order (one step's local error is one order above
its own): heun -> euler (as k-diffusion's `sample_heun` does), rk4 -> rk3, and dopri5
integrates adaptively to sigmas[-2] and finishes with rk3. The velocity count stays honest:
heun makes 2N - 1 calls, rk4 4N - 1.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from .conventions import sigma_from_t, t_from_sigma, velocity_from_denoised
from .solvers import METHODS, SolverStats, integrate

LAST_STEP = {"heun": "euler", "rk4": "rk3", "dopri5": "rk3"}
"""Method -> the method taking the final interval when it ends at sigma = 0."""


def sample_flow(
    model: Callable[..., Tensor],
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    disable: bool | None = None,
    method: str = "euler",
    stats: SolverStats | None = None,
    **options: Any,
) -> Tensor:
    """Run `integrate` with `method` on ComfyUI's denoiser over `sigmas` (k-diffusion sampler).

    Args:
        model: ComfyUI's denoiser, model(x, sigma [B], **extra_args) -> D (data estimate).
        x: noise-scaled latent [B, ...] at sigmas[0].
        sigmas: 1-D, strictly monotonic; sigmas[0] must be > 0 (no velocity at sigma = 0).
        extra_args: passed to `model` (ComfyUI's model_options, seed, denoise_mask).
        callback: gets {"i", "x", "denoised", "sigma", "sigma_hat"} once per step.
        disable: ComfyUI's progress-bar switch; unused (progress goes through `callback`).
        method: a name in `METHODS`; options (rtol, atol, max_steps) go to `integrate`.
        stats: a `SolverStats` to add velocity calls and steps to.

    Returns:
        The latent at sigmas[-1], like `x`.
    """
    if sigmas.ndim != 1:
        raise ValueError(f"sigmas must be 1-D, got shape {tuple(sigmas.shape)}")
    if sigmas.numel() < 2:
        return x
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    if float(sigmas[0]) <= 0:
        raise ValueError(f"sigmas[0] must be > 0 (ComfyUI's denoiser gives no velocity at sigma = 0), got {float(sigmas[0])}")
    extra_args = {} if extra_args is None else extra_args
    stats = SolverStats() if stats is None else stats
    start = stats.accepted
    ts = t_from_sigma(sigmas.detach().to(torch.float64).cpu())

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        sigma = sigma_from_t(t).to(x.dtype)
        return velocity_from_denoised(x, model(x, sigma, **extra_args), sigma)

    def report(offset: int) -> Callable[[int, float, Tensor, Tensor], None] | None:
        if callback is None:
            return None

        def step_done(i: int, t: float, state: Tensor, data: Tensor) -> None:
            sigma = sigmas.new_tensor(sigma_from_t(t))
            # k-diffusion samplers never modify a reported x; integrate's state is updated in place.
            callback({"i": offset + i, "x": state.to(x.dtype, copy=True), "denoised": data.to(x.dtype), "sigma": sigma, "sigma_hat": sigma})

        return step_done

    if float(sigmas[-1]) != 0 or not METHODS[method].evaluates_end:
        return integrate(velocity, x, ts, method, callback=report(0), stats=stats, **options)
    if ts.numel() > 2:
        x = integrate(velocity, x, ts[:-1], method, callback=report(0), stats=stats, **options)
    last = LAST_STEP[method]
    return integrate(velocity, x, ts[-2:], last, callback=report(stats.accepted - start), stats=stats)
