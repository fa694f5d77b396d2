"""Sigma schedules for the sampler nodes: the model's own, or the pack's flow schedules.

"model default" is ComfyUI's `simple` scheduler on the model-sampling object in force,
so it follows the checkpoint's shift and any ModelSamplingSD3 / AuraFlow / Flux node, and
matches KSampler(scheduler="simple"). The other schedules are `samplers.schedules` grids
in seed time, converted to sigma by `samplers.conventions`.
"""

from __future__ import annotations

import comfy.samplers
import torch

from ..samplers import conventions, schedules

MODEL_DEFAULT = "model default"
OPTIMAL = "optimal"
SCHEDULES = (MODEL_DEFAULT, "uniform", "sd3 shift", "flux resolution shift", OPTIMAL)
FIXED_SCHEDULES = SCHEDULES[:-1]  # all but the searched grid, for nodes that do not sample with a chosen solver


def image_size(latent_shape, spatial_downscale: int) -> tuple[int, int]:
    """(width, height) in pixels of a latent shaped [..., H, W]."""
    return latent_shape[-1] * spatial_downscale, latent_shape[-2] * spatial_downscale


def full_schedule(model, schedule: str, steps: int, shift: float, size: tuple[int, int], optimal=None) -> torch.Tensor:
    """Sigmas [steps + 1] from 1 (noise) to 0 (data) for a full (denoise = 1) run; `optimal(steps)`
    gives the searched grid (see nodes.optimal_schedule)."""
    if schedule == OPTIMAL:
        if optimal is None:
            raise ValueError(f"schedule {OPTIMAL!r} needs a searched grid")
        return optimal(steps)
    if schedule == MODEL_DEFAULT:
        return comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", steps).cpu()
    if schedule == "uniform":
        t = schedules.time_grid(steps)
    elif schedule == "sd3 shift":
        t = schedules.time_grid(steps, shift=shift)
    elif schedule == "flux resolution shift":
        t = schedules.time_grid(steps, mu=schedules.flux_mu(schedules.flux_tokens(*size)))
    else:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    return conventions.sigma_from_t(t).float()


def schedule_sigmas(model, schedule: str, steps: int, shift: float, denoise: float,
                    size: tuple[int, int], optimal=None) -> torch.Tensor:
    """Sigmas for `steps` steps at image `size` (width, height); `denoise` < 1 keeps the last
    steps of a longer schedule, exactly as KSampler does, so img2img strength means the same."""
    if denoise <= 0.0:
        return torch.zeros(0)
    if denoise >= 1.0:
        return full_schedule(model, schedule, steps, shift, size, optimal)
    total = int(steps / denoise)
    return full_schedule(model, schedule, total, shift, size, optimal)[-(steps + 1):]
