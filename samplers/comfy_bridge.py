"""ComfyUI's sampler interface over `integrate`: k-diffusion's signature, seed time inside.

ComfyUI calls `sample_flow(model, x, sigmas, extra_args, callback, disable, **extra_options)`
with `x` already noise-scaled and `model(x, sigma * ones[B], **extra_args)` returning the
data estimate D. The bridge integrates v(x, t) = (D(x, 1 - t) - x) / (1 - t) over
t = 1 - sigmas and reports each grid point through ComfyUI's callback dict, so the progress
bar counts the schedule's points for every method, dopri5 included.

The end at sigma = 0: D gives no velocity there (0 / 0), so the model is never called at 0.
Flow-aware methods and the textbook ones with no stage at an interval's end (euler,
midpoint, rk3) run unchanged, like ComfyUI's euler, whose last evaluation is at sigmas[-2].
heun and rk4 take the last interval with a rule that has no stage at its end and keeps their
global order (one step's local error is one order above its own): heun -> euler (as
k-diffusion's `sample_heun` does), rk4 -> rk3; heun makes 2N - 1 calls, rk4 4N - 1. dopri5
integrates adaptively to sigma = `SIGMA_FLOOR` (or half the last nonzero sigma, if smaller),
reporting every requested sigma by dense output, and finishes with the exact limit
x(0) = D(x, sigma_floor) (one call, error O(sigma_floor)), however few steps were asked for.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from .conventions import sigma_from_t, t_from_sigma, velocity_from_denoised
from .methods import METHODS
from .solvers import Solution, integrate

LAST_STEP = {"heun": "euler", "rk4": "rk3"}
"""Textbook method with a stage at the interval's end -> the method taking a final interval to sigma = 0."""

SIGMA_FLOOR = 1e-3
"""Where dopri5's adaptive run stops before its closing step to sigma = 0."""


@torch.no_grad()
def sample_flow(
    model: Callable[..., Tensor],
    x: Tensor,
    sigmas: Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    disable: bool | None = None,
    method: str = "euler",
    on_solution: Callable[[Solution], None] | None = None,
    **options: Any,
) -> Tensor:
    """Run `integrate` with `method` on ComfyUI's denoiser over `sigmas` (k-diffusion sampler).

    Runs under torch.no_grad(): sampling never records autograd, in or out of ComfyUI's executor.

    Args:
        model: ComfyUI's denoiser, model(x, sigma [B], **extra_args) -> D (data estimate).
        x: noise-scaled latent [B, ...] at sigmas[0].
        sigmas: 1-D, strictly monotonic; sigmas[0] must be > 0 (no velocity at sigma = 0).
        extra_args: passed to `model` (ComfyUI's model_options, seed, denoise_mask).
        callback: gets {"i", "x", "denoised", "sigma", "sigma_hat"} once per schedule point
            sigmas[0 .. N-1].
        disable: ComfyUI's progress-bar switch; unused (progress goes through `callback`).
        method: a name in `METHODS`; options (rtol, atol, max_steps) go to `integrate`.
        on_solution: receives the run's `Solution` (final state, model calls, accepted and
            rejected steps, summed over the parts described in the module docstring).

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
    ts = t_from_sigma(sigmas.detach().to(torch.float64).cpu())

    # The model sees sigmas[i] itself at grid points (t arrives rounded to the working dtype, and
    # 1 - (1 - sigma) need not round back to sigma), like ComfyUI's own samplers.
    work = torch.promote_types(x.dtype, torch.float32)
    grid_index = {float(t): i for i, t in enumerate(ts.to(work))}
    last_call: dict[str, Any] = {}  # the model's own D at its last call, reported when a step starts there

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        index = grid_index.get(float(t[0]))
        sigma = sigma_from_t(t).to(x.dtype) if index is None else sigmas[index].to(x.dtype) * x.new_ones(t.shape[0])
        denoised = model(x, sigma, **extra_args)
        if callback is not None:
            last_call.update(index=index, denoised=denoised)
        return velocity_from_denoised(x, denoised, sigma)

    def report(offset: int) -> Callable[[int, float, Tensor, Tensor], None] | None:
        if callback is None:
            return None

        def step_done(i: int, t: float, state: Tensor, data: Tensor) -> None:
            sigma = sigmas[offset + i]
            if last_call.get("index") == offset + i:
                data = last_call["denoised"]
            # k-diffusion samplers never modify a reported x; integrate's state is updated in place.
            callback({"i": offset + i, "x": state.to(x.dtype, copy=True), "denoised": data.to(x.dtype),
                      "sigma": sigma, "sigma_hat": sigma})

        return step_done

    spec = METHODS[method]
    parts: list[Solution] = []
    if float(sigmas[-1]) != 0 or not spec.evaluates_end:
        parts.append(integrate(velocity, x, ts, method, callback=report(0), **options))
    elif method in LAST_STEP:
        if ts.numel() > 2:
            parts.append(integrate(velocity, x, ts[:-1], method, callback=report(0), **options))
            x = parts[-1].state
        parts.append(integrate(velocity, x, ts[-2:], LAST_STEP[method], callback=report(ts.numel() - 2)))
    else:  # adaptive to a floor, then the exact limit at sigma = 0 (reported points are all in the first part)
        floor = min(SIGMA_FLOOR, float(sigmas[-2]) / 2)
        stop = ts.clone()
        stop[-1] = 1 - floor
        parts.append(integrate(velocity, x, stop, method, callback=report(0), **options))
        parts.append(integrate(velocity, parts[-1].state, stop[-1:].new_tensor([1 - floor, 1.0]), "euler"))
    solution = Solution(parts[-1].state, sum(p.nfe for p in parts), sum(p.accepted for p in parts),
                        sum(p.rejected for p in parts))
    if on_solution is not None:
        on_solution(solution)
    return solution.state
