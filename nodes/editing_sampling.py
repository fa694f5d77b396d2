"""ComfyUI plumbing for inversion and FlowEdit: ComfyUI's guider does the conditioning, CFG,
model loading and latent scaling; `samplers.editing` does the ODE in seed time.

Both run as a `comfy.samplers.Sampler` inside a guider's `sample`, which hands the sampler
the guider itself (cond / uncond already encoded for the model) and the model-space latent.
A denoiser D(x, sigma) gives the seed velocity v = (D - x) / sigma, undefined at sigma = 0
(the image end); where a solver asks for it there (inversion's first call, and solvers with
a stage at the end of the last step), sigma is floored at `SIGMA_FLOOR`. The network is
smooth in sigma, so this changes v by O(SIGMA_FLOOR); fp32 cancellation in D - x adds
about 1e-7 / SIGMA_FLOOR relative error.
"""

from __future__ import annotations

import math

import comfy.sample
import comfy.samplers
import comfy.utils
import torch

from ..samplers.comfy_bridge import sample_flow
from ..samplers.conventions import t_from_sigma, velocity_from_denoised
from ..samplers.editing import flow_edit, invert
from ..samplers.editing import EditStats
from .sampling_guard import GuardedDenoiser

SIGMA_FLOOR = 1e-3


class CallSampler(comfy.samplers.Sampler):
    """A Sampler that runs `fn(guider, sigmas, extra_args, latent)` on the model-space latent."""

    def __init__(self, fn):
        self.fn = fn

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        return self.fn(model_wrap, sigmas, extra_args, latent_image)


class FlowEditGuider(comfy.samplers.CFGGuider):
    """CFGGuider whose usual branch ("positive"/"negative", `cfg`) is the target prompt, plus a
    source branch ("source_positive"/"source_negative", `source_cfg`) that FlowEdit calls
    for the same x in the same run."""

    def set_edit(self, source_positive, target_positive, negative, source_cfg: float, target_cfg: float):
        self.inner_set_conds({"positive": target_positive, "negative": negative,
                              "source_positive": source_positive, "source_negative": negative})
        self.set_cfg(target_cfg)
        self.source_cfg = source_cfg

    def predict_source(self, x, timestep, model_options={}, seed=None):
        return comfy.samplers.sampling_function(self.inner_model, x, timestep, self.conds.get("source_negative"),
                                                self.conds.get("source_positive"), self.source_cfg,
                                                model_options=model_options, seed=seed)


def floored_velocity(denoiser, extra_args):
    """Seed velocity v(x, t) from a denoiser D(x, sigma, **extra_args), sigma = max(1 - t, SIGMA_FLOOR)."""

    def velocity(x, t):
        sigma = t_from_sigma(t).clamp_min(SIGMA_FLOOR).to(x.dtype)
        return velocity_from_denoised(x, denoiser(x, sigma, **extra_args), sigma)

    return velocity


def guider_denoiser(predict):
    """ComfyUI's k-diffusion denoiser shape model(x, sigma, model_options=..., seed=...) over a guider branch."""
    return lambda x, sigma, model_options=None, seed=None, **_: predict(x, sigma, model_options=model_options or {},
                                                                        seed=seed)


def run_guider(model, guider, fn, latent: torch.Tensor, sigmas: torch.Tensor, seed: int) -> torch.Tensor:
    """Run `fn` as the guider's sampler on `latent` (VAE space); the guider scales `fn`'s
    model-space input and output, so the result is in VAE space."""
    samples = comfy.sample.fix_empty_latent_channels(model, latent)
    return guider.sample(torch.zeros_like(samples), samples, CallSampler(fn), sigmas, seed=seed,
                         disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED)


def with_progress(velocity, stats: EditStats, bar):
    """`velocity` that moves ComfyUI's progress bar to the solver's accepted steps."""

    def step_counted(x, t):
        bar.update_absolute(stats.accepted)
        return velocity(x, t)

    return step_counted


def invert_latent(model, positive, negative, cfg: float, latent: torch.Tensor, sigmas: torch.Tensor, solver: str,
                  node: str, round_trip: bool) -> tuple[torch.Tensor, dict]:
    """(noise [model space], stats) such that sampling `sigmas` from that noise with `solver` returns `latent`.

    For sigmas[0] < 1 (partial inversion) the noise is the one KSampler's noise scaling turns
    into the inverted state: noise = (x_{sigma0} - (1 - sigma0) * latent) / sigma0.
    """
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    report = {}
    bar = comfy.utils.ProgressBar(len(sigmas) - 1)

    def fn(wrap, sigmas, extra_args, x_data):
        guarded = GuardedDenoiser(guider_denoiser(wrap), node, len(sigmas) - 1)
        stats = EditStats()
        ts = t_from_sigma(sigmas.detach().to(torch.float64).cpu())
        velocity = with_progress(floored_velocity(guarded, extra_args), stats, bar)
        x_noisy = invert(velocity, x_data, ts, solver, stats=stats)
        sigma0 = float(sigmas[0])
        report["nfe"] = stats.nfe
        if round_trip:
            back = sample_flow(guarded, x_noisy, sigmas, extra_args=extra_args, method=solver)
            error = (back.float() - x_data.float())
            report["rmse"] = float(error.pow(2).mean().sqrt())
            span = float(x_data.max() - x_data.min()) or 1.0
            report["psnr"] = 10 * math.log10(span**2 / max(report["rmse"] ** 2, 1e-20))
            report["nfe_round_trip"] = guarded.nfe - stats.nfe
        return (x_noisy - (1 - sigma0) * x_data) / sigma0

    noise = run_guider(model, guider, fn, latent, sigmas, 0)
    return model.get_model_object("latent_format").process_in(noise), report


def edit_latent(model, source_positive, target_positive, negative, source_cfg: float, target_cfg: float,
                latent: torch.Tensor, sigmas: torch.Tensor, n_max: int, n_min: int, n_avg: int, seed: int, solver: str,
                node: str, relaxation: float | None, data_bound: float | None) -> tuple[torch.Tensor, dict]:
    """FlowEdit over the full schedule `sigmas` (1 -> 0); returns (edited latent [VAE space], stats).
    `relaxation`: None for the paper's ODE, else the re-noised update's fraction, with its
    `data_bound` (None: no clip; `samplers.editing`)."""
    guider = FlowEditGuider(model)
    guider.set_edit(source_positive, target_positive, negative, source_cfg, target_cfg)
    steps = len(sigmas) - 1
    bar = comfy.utils.ProgressBar(steps)
    report = {}

    def fn(wrap, sigmas, extra_args, x_source):
        target = GuardedDenoiser(guider_denoiser(wrap), node, steps)
        source = GuardedDenoiser(guider_denoiser(wrap.predict_source), node, steps)
        generator = torch.Generator().manual_seed(seed)
        noise = lambda: torch.randn(x_source.shape, generator=generator, dtype=torch.float32)  # noqa: E731

        def on_step(i, t, z):
            target.steps_done = source.steps_done = i + 1
            bar.update_absolute(i + 1)

        ts = t_from_sigma(sigmas.detach().to(torch.float64).cpu())
        edited = flow_edit(floored_velocity(source, extra_args), floored_velocity(target, extra_args), x_source, ts,
                           noise, n_max=n_max, n_min=n_min, n_avg=n_avg, method=solver, relaxation=relaxation,
                           data_bound=data_bound, callback=on_step)
        report.update(nfe=target.nfe + source.nfe,
                      change=float((edited.float() - x_source.float()).pow(2).mean().sqrt()))
        return edited

    return run_guider(model, guider, fn, latent, sigmas, seed), report
