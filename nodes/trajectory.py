"""FlowMatchTrajectory: how straight the connected model's flow is, and the data estimate along t."""

from __future__ import annotations

import comfy.sample
import comfy.samplers
import comfy.utils
import torch
from comfy_api.latest import io, ui

from ..samplers.conventions import sigma_from_t, t_from_sigma, velocity_from_denoised
from ..samplers.straightness import Straightness, measure_straightness
from .latent_fit import model_geometry, require_latent_fits
from .limits import require_affordable_work
from .sampling_guard import guard_sampler
from .sampling import SCHEDULE_TOOLTIP, check_choice
from .sigmas import FIXED_SCHEDULES, MODEL_DEFAULT, image_size, schedule_sigmas

NODE = "FlowMatchTrajectory"


def straightness_sampler(box: dict) -> comfy.samplers.KSAMPLER:
    """A SAMPLER that runs Euler over ComfyUI's denoiser and stores the `Straightness` in `box`."""

    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None, on_solution=None):
        # Euler on a fixed grid accepts every step; the guard counts the model calls.
        extra_args = extra_args or {}

        def velocity(state, t):
            sigma = sigma_from_t(t).to(state.dtype)
            return velocity_from_denoised(state, model(state, sigma, **extra_args), sigma)

        result = measure_straightness(velocity, x, t_from_sigma(sigmas.detach().double().cpu()), "euler")
        box["result"] = result
        return result.x1

    return comfy.samplers.KSAMPLER(guard_sampler(sample, NODE))


def frame_indices(available: int, frames: int) -> list[int]:
    """`frames` indices spread evenly over `available` points, first and last included."""
    if frames >= available:
        return list(range(available))
    return sorted({round(i * (available - 1) / (frames - 1)) for i in range(frames)}) if frames > 1 else [available - 1]


def latent_preview_rgb(model, latents: torch.Tensor) -> torch.Tensor:
    """ComfyUI's latent2rgb preview of model-space latents [N, C, H, W] -> IMAGE [N, H, W, 3] in [0, 1]
    (exact for the pixel-space FlowMatch models, an approximation for VAE latents)."""
    latent_format = model.get_model_object("latent_format")
    factors = torch.tensor(latent_format.latent_rgb_factors, dtype=torch.float32)  # [C, 3]
    bias = latent_format.latent_rgb_factors_bias
    rgb = torch.einsum("nchw,cr->nhwr", latents.float().cpu(), factors)
    if bias is not None:
        rgb = rgb + torch.tensor(bias, dtype=torch.float32)
    return ((rgb + 1) / 2).clamp(0, 1)


def strips(model, vae, result: Straightness, frames: int) -> torch.Tensor:
    """Data estimates, one row of `frames` images per batch item: IMAGE [B, H, F*W, 3]. Decoded
    with `vae` when given, else ComfyUI's latent2rgb preview of the model-space estimates."""
    chosen = result.data_estimates[frame_indices(result.data_estimates.shape[0], frames)]  # [F, B, ...]
    f, b = chosen.shape[:2]
    flat = chosen.flatten(0, 1)
    if vae is None:
        images = latent_preview_rgb(model, flat)
    else:
        images = vae.decode(model.model.process_latent_out(flat.to(result.x1.device, result.x1.dtype)))
    images = images.reshape(f, b, *images.shape[1:])
    return torch.cat(list(images), dim=2)


def summary(result: Straightness, steps: int, cfg: float, frames: list[float]) -> str:
    lines = [f"straightness S = {result.value:.5f} (0 = straight paths; Euler {steps} steps, cfg {cfg:g})"]
    if result.per_sample.numel() > 1:
        lines.append("per image: " + ", ".join(f"{v:.4f}" for v in result.per_sample.tolist()))
    lines.append("strip at t = " + ", ".join(f"{t:.2f}" for t in frames))
    return "\n".join(lines)


class FlowMatchTrajectory(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=NODE,
            display_name="Flow Match Trajectory",
            category="flow_matching/diagnostics",
            description=(
                "Measures how straight the model's flow is for this prompt and noise (Rectified Flow's straightness: "
                "how far the velocity strays from the straight line from noise to image, 0 = perfectly straight, "
                "so few steps suffice) and shows the model's image estimate along the way as a strip."
            ),
            inputs=[
                io.Model.Input("model", tooltip="A flow-matching model (the bundled ones, SD3, Flux, AuraFlow ...)."),
                io.Conditioning.Input("positive", tooltip="What the image should show."),
                io.Conditioning.Input("negative", tooltip="What to steer away from; an empty prompt for plain CFG."),
                io.Latent.Input("latent_image", tooltip="An empty latent: its size and batch set the trajectories."),
                io.Vae.Input("vae", optional=True, tooltip="Decodes the strip's image estimates; without it the "
                             "strip shows ComfyUI's fast latent preview colours."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the starting noise; the same seed gives the same trajectory."),
                io.Int.Input("steps", default=20, min=1, max=1000,
                             tooltip="Euler steps along the trajectory (more = a finer estimate of the integral)."),
                io.Combo.Input("schedule", options=list(FIXED_SCHEDULES), default=MODEL_DEFAULT, tooltip=SCHEDULE_TOOLTIP),
                io.Float.Input("shift", default=3.0, min=0.01, max=100.0, step=0.01,
                               tooltip="Shift for the 'sd3 shift' schedule (higher spends more steps near noise)."),
                io.Float.Input("cfg", default=4.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Guidance scale; the guided velocity is what gets measured (1 for reflowed models)."),
                io.Int.Input("frames", default=8, min=2, max=64,
                             tooltip="How many image estimates the strip shows, from noise (left) to the final image (right)."),
            ],
            outputs=[
                io.Image.Output(display_name="strip", tooltip="Per image, the model's image estimate at evenly spaced steps."),
                io.Float.Output(display_name="straightness", tooltip="Normalised straightness S (0 = straight)."),
                io.Latent.Output(display_name="latent", tooltip="The sampled latent at the end of the trajectory."),
            ],
        )

    @classmethod
    def validate_inputs(cls, schedule):
        return check_choice(NODE, "schedule", schedule, FIXED_SCHEDULES)

    @classmethod
    def execute(cls, model, positive, negative, latent_image, seed, steps, schedule, shift, cfg, frames,
                vae=None) -> io.NodeOutput:
        require_latent_fits(NODE, model, latent_image["samples"])
        samples = comfy.sample.fix_empty_latent_channels(model, latent_image["samples"])
        require_affordable_work(NODE, model, samples.shape)
        size = image_size(samples.shape, model_geometry(model).spatial)
        sigmas = schedule_sigmas(model, schedule, steps, shift, 1.0, size)
        noise = comfy.sample.prepare_noise(samples, seed, latent_image.get("batch_index"))
        box: dict = {}
        final = comfy.sample.sample_custom(
            model, noise, cfg, straightness_sampler(box), sigmas, positive, negative, samples,
            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed,
        )
        result: Straightness = box["result"]
        picked = frame_indices(result.data_estimates.shape[0], frames)
        times = [*result.ts.tolist(), float(t_from_sigma(sigmas[-1]))]
        out = latent_image.copy()
        out["samples"] = final
        return io.NodeOutput(strips(model, vae, result, frames), result.value, out,
                             ui=ui.PreviewText(summary(result, steps, cfg, [times[i] for i in picked])))
