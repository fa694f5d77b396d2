"""What every sampling path of the pack does before it starts (the latent fits the model
and the work limits) and per model call and per step: an interrupt check, a non-finite
guard naming the step, an NFE count, and the step callback that drives ComfyUI's progress
bar and latent previews."""

from __future__ import annotations

import logging

import torch

import comfy.model_management

from .latent_fit import require_latent_fits
from .limits import require_affordable_work


class NonFiniteSampleError(RuntimeError):
    """The model produced NaN/inf: stop instead of decoding a black image."""


def non_finite_message(node: str, step: int, total: int, sigma: float) -> str:
    return (
        f"{node}: non-finite values at step {step}/{total} (sigma={sigma:.4g}). "
        "Try a higher-precision dtype (--fp32-unet or --force-fp32) or a lower cfg."
    )


class GuardedDenoiser:
    """Wraps ComfyUI's denoiser `model(x, sigma, **extra) -> x0`: checks for an interrupt
    before and for non-finite output after each call, and counts calls (NFE). Attribute
    access falls through to the wrapped denoiser (samplers may read `inner_model`)."""

    def __init__(self, denoiser, node: str, total_steps: int):
        self.denoiser = denoiser
        self.node = node
        self.total_steps = total_steps
        self.steps_done = 0
        self.nfe = 0

    def __call__(self, x, sigma, **kwargs):
        comfy.model_management.throw_exception_if_processing_interrupted()
        self.nfe += 1
        denoised = self.denoiser(x, sigma, **kwargs)
        if not torch.isfinite(denoised).all():
            step = min(self.steps_done + 1, self.total_steps)
            raise NonFiniteSampleError(non_finite_message(self.node, step, self.total_steps, float(sigma.flatten()[0])))
        return denoised

    def __getattr__(self, name):
        return getattr(self.denoiser, name)


def guard_sampler(sampler_function, node: str, report: dict | None = None, on_counts=None):
    """A k-diffusion-shaped sampler that runs `sampler_function` behind a GuardedDenoiser.

    `report`, when given, receives `nfe` and `steps` after the run (and `accepted`, `rejected`
    from the solver's result); `on_counts(counts)` gets the same dict; the counts are logged too.
    """

    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None, **options):
        patcher = getattr(getattr(model, "inner_model", None), "model_patcher", None)  # KSAMPLER's CFG guider
        if patcher is not None:  # SamplerCustom(Advanced) reach no node check before this
            require_latent_fits(node, patcher, x, check_empty=False)
            require_affordable_work(node, patcher, x.shape)
        guarded = GuardedDenoiser(model, node, len(sigmas) - 1)

        def on_step(info):
            guarded.steps_done = info["i"] + 1
            comfy.model_management.throw_exception_if_processing_interrupted()
            if callback is not None:
                callback(info)

        counts = {}
        result = sampler_function(guarded, x, sigmas, extra_args=extra_args, callback=on_step, disable=disable,
                                  on_solution=lambda s: counts.update(accepted=s.accepted, rejected=s.rejected), **options)
        logging.info("%s: %d steps, %d model evaluations (NFE), %s accepted, %s rejected", node, guarded.total_steps,
                     guarded.nfe, counts.get("accepted"), counts.get("rejected"))
        counts.update(nfe=guarded.nfe, steps=guarded.total_steps)
        if report is not None:
            report.update(counts)
        if on_counts is not None:
            on_counts(counts)
        return result

    return sample
