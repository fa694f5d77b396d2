"""FlowMatchInvert (image latent -> NOISE) and FlowMatchEdit (FlowEdit: source -> target prompt)."""

from __future__ import annotations

import torch
from comfy_api.latest import io, ui

from ..samplers.editing import INVERTIBLE_METHODS
from .editing_sampling import edit_latent, invert_latent
from .latent_fit import model_geometry, require_latent_fits
from .limits import require_affordable_work, require_schedule_length
from .sampling import SCHEDULE_TOOLTIP, SOLVER_TOOLTIP, check_choice
from .sigmas import FIXED_SCHEDULES, MODEL_DEFAULT, image_size, schedule_sigmas


RENOISED = "renoised"
EDIT_UPDATES = (RENOISED, "flowedit ode")


class InvertedNoise:
    """ComfyUI's NOISE interface (`seed`, `generate_noise(latent)`) over a stored noise tensor."""

    def __init__(self, samples: torch.Tensor):
        self.samples = samples.detach().cpu()
        self.seed = 0

    def generate_noise(self, input_latent: dict) -> torch.Tensor:
        shape = tuple(input_latent["samples"].shape)
        if tuple(self.samples.shape) != shape:
            raise ValueError(
                f"Flow Match Invert: the inverted noise has shape {tuple(self.samples.shape)} but the latent to sample "
                f"has shape {shape}; sample the same latent (same size and batch) that was inverted."
            )
        return self.samples.clone()


def sigmas_for(node: str, model, latent: torch.Tensor, schedule: str, steps: int, shift: float,
               denoise: float) -> torch.Tensor:
    """The schedule, after the sampler's refusals (schedule length, latent fit, work per model call)."""
    require_schedule_length(node, steps, denoise)
    require_latent_fits(node, model, latent)
    require_affordable_work(node, model, latent.shape)
    size = image_size(latent.shape, model_geometry(model).spatial)
    return schedule_sigmas(model, schedule, steps, shift, denoise, size)


def choices_ok(node: str, solver, schedule) -> bool | str:
    solver_ok = check_choice(node, "solver", solver, INVERTIBLE_METHODS)
    return solver_ok if solver_ok is not True else check_choice(node, "schedule", schedule, FIXED_SCHEDULES)


class FlowMatchInvert(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlowMatchInvert",
            display_name="Flow Match Invert",
            category="flow_matching/editing",
            description=(
                "Inversion ('unsampling'): integrates the flow ODE backwards from an image latent to the noise the "
                "model maps back to it. Feed the NOISE to Flow Match Sampler or SamplerCustomAdvanced with the same "
                "model, prompt, cfg, solver, steps and schedule to reconstruct the image, or with another prompt to "
                "edit it. Optionally shows the round-trip error (costs one more sampling run)."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The flow-matching model that will sample from the noise."),
                io.Conditioning.Input("positive", tooltip="The prompt describing the image (the one to reconstruct with)."),
                io.Conditioning.Input("negative", tooltip="The negative prompt (only used when cfg is not 1)."),
                io.Latent.Input("latent_image", tooltip="The image latent to invert, e.g. from VAE Encode."),
                io.Combo.Input("solver", options=list(INVERTIBLE_METHODS), default="midpoint",
                               tooltip=SOLVER_TOOLTIP + " Sample with the same solver to reconstruct."),
                io.Int.Input("steps", default=8, min=1, max=1000, tooltip="Solver steps, the same as when sampling back."),
                io.Float.Input("cfg", default=1.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Guidance while inverting; 1 (none) inverts most faithfully and is fastest."),
                io.Combo.Input("schedule", options=list(FIXED_SCHEDULES), default=MODEL_DEFAULT, tooltip=SCHEDULE_TOOLTIP),
                io.Float.Input("shift", default=3.0, min=0.01, max=100.0, step=0.01,
                               tooltip="Shift for the 'sd3 shift' schedule (3 inverts the bundled model best)."),
                io.Float.Input("denoise", default=1.0, min=0.01, max=1.0, step=0.01,
                               tooltip="How far to invert: 1 = all the way to noise; less stops part way, matching "
                                       "a sampler run with the same denoise."),
                io.Boolean.Input("show_round_trip", default=False,
                                 tooltip="Sample back with the same settings and show the reconstruction error."),
            ],
            outputs=[io.Noise.Output(tooltip="The inverted noise, for SamplerCustomAdvanced or Flow Match Sampler.")],
        )

    @classmethod
    def validate_inputs(cls, solver, schedule):
        return choices_ok("FlowMatchInvert", solver, schedule)

    @classmethod
    def execute(cls, model, positive, negative, latent_image, solver, steps, cfg, schedule, shift, denoise,
                show_round_trip) -> io.NodeOutput:
        sigmas = sigmas_for("FlowMatchInvert", model, latent_image["samples"], schedule, steps, shift, denoise)
        noise, report = invert_latent(model, positive, negative, cfg, latent_image["samples"], sigmas, solver,
                                      "FlowMatchInvert", show_round_trip)
        text = f"inverted with {solver}: {report['nfe']} model evaluations (NFE)"
        if show_round_trip:
            text += (f"; round trip: RMSE {report['rmse']:.4g}, PSNR {report['psnr']:.1f} dB over the latent's range "
                     f"({report['nfe_round_trip']} NFE)")
        return io.NodeOutput(InvertedNoise(noise), ui=ui.PreviewText(text))


class FlowMatchEdit(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlowMatchEdit",
            display_name="Flow Match Edit (FlowEdit)",
            category="flow_matching/editing",
            description=(
                "Text-based image editing without inversion (FlowEdit, Kulikov et al. ICCV 2025): moves the source "
                "image towards the target prompt by the difference between the model's predictions for the target "
                "and the source prompt on matching noisy copies of the image. 'renoised' (default) noises the current "
                "edit for the target branch and moves a fixed fraction per step; 'flowedit ode' is the paper's ODE. "
                "Works on any flow model (the bundled one, SD3, Flux, ...)."
            ),
            inputs=[
                io.Model.Input("model", tooltip="A flow-matching model."),
                io.Conditioning.Input("source", tooltip="A prompt describing the image as it is."),
                io.Conditioning.Input("target", tooltip="The same prompt with the edit applied."),
                io.Conditioning.Input("negative", tooltip="The negative prompt for both branches (usually empty)."),
                io.Latent.Input("latent_image", tooltip="The image latent to edit, e.g. from VAE Encode."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the noise FlowEdit averages over."),
                io.Int.Input("steps", default=10, min=1, max=1000, tooltip="Steps of the full schedule (T)."),
                io.Int.Input("n_max", default=5, min=1, max=1000,
                             tooltip="Edit strength: how many of the last steps (counted from the image end) the "
                                     "edit runs; the first steps - n_max are skipped. More changes more."),
                io.Int.Input("n_min", default=0, min=0, max=1000,
                             tooltip="The last n_min steps regenerate with the target prompt alone (adds detail, "
                                     "keeps less); 0 = pure FlowEdit."),
                io.Int.Input("n_avg", default=2, min=1, max=64,
                             tooltip="Noise draws averaged per step (each costs two model evaluations)."),
                io.Float.Input("source_cfg", default=4.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Guidance for the source prompt."),
                io.Float.Input("target_cfg", default=4.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Guidance for the target prompt (the paper's ODE usually wants it higher "
                                       "than the source's)."),
                io.Combo.Input("solver", options=list(INVERTIBLE_METHODS), default="euler",
                               tooltip="Solver of the n_min regeneration steps (the edit itself uses Euler, as "
                                       "FlowEdit does). " + SOLVER_TOOLTIP),
                io.Combo.Input("schedule", options=list(FIXED_SCHEDULES), default=MODEL_DEFAULT, tooltip=SCHEDULE_TOOLTIP),
                io.Float.Input("shift", default=3.0, min=0.01, max=100.0, step=0.01,
                               tooltip="Shift for the 'sd3 shift' schedule."),
                io.Combo.Input("update", options=list(EDIT_UPDATES), default=RENOISED, optional=True,
                               tooltip="'renoised': the target branch sees the current edit noised like the source, "
                                       "and each step moves the edit `relaxation` of the way to the edited image the "
                                       "two predictions give (keeps the object's size on colour edits). 'flowedit "
                                       "ode': the paper's Euler ODE."),
                io.Float.Input("relaxation", default=0.5, min=0.01, max=1.0, step=0.01, optional=True,
                               tooltip="'renoised' only: the fraction of the way each step moves (1 = all of it)."),
                io.Float.Input("data_bound", default=2.0, min=0.0, max=100.0, step=0.1, optional=True,
                               tooltip="'renoised' only: clip the model's image predictions to +- this many times the "
                                       "source latent's largest value (per image) before comparing them, so guidance "
                                       "overshoot cannot grow the object on background edits. 0 = no clip."),
            ],
            outputs=[io.Latent.Output(tooltip="The edited latent; decode it with VAE Decode.")],
        )

    @classmethod
    def validate_inputs(cls, steps, n_max, n_min, solver, schedule, update=RENOISED):
        if None not in (steps, n_max, n_min) and not n_min < n_max <= steps:
            return (f"FlowMatchEdit: need n_min < n_max <= steps, got n_min={n_min}, n_max={n_max}, steps={steps}; "
                    "lower n_max or raise steps")
        update_ok = check_choice("FlowMatchEdit", "update", update, EDIT_UPDATES)
        return update_ok if update_ok is not True else choices_ok("FlowMatchEdit", solver, schedule)

    @classmethod
    def execute(cls, model, source, target, negative, latent_image, seed, steps, n_max, n_min, n_avg, source_cfg,
                target_cfg, solver, schedule, shift, update=RENOISED, relaxation=0.5,
                data_bound=2.0) -> io.NodeOutput:
        window = cls.validate_inputs(steps, n_max, n_min, solver, schedule, update)
        if window is not True:
            raise ValueError(window)
        renoised = update == RENOISED
        sigmas = sigmas_for("FlowMatchEdit", model, latent_image["samples"], schedule, steps, shift, 1.0)
        edited, report = edit_latent(model, source, target, negative, source_cfg, target_cfg, latent_image["samples"],
                                     sigmas, n_max, n_min, n_avg, seed, solver, "FlowMatchEdit",
                                     relaxation=relaxation if renoised else None,
                                     data_bound=(data_bound or None) if renoised else None)
        out = latent_image.copy()
        out["samples"] = edited
        bound = f"bound {data_bound:g}" if data_bound else "no bound"
        how = f"renoised, relaxation {relaxation:g}, {bound}" if renoised else "the paper's ODE"
        text = (f"FlowEdit ({how}): {n_max - n_min} edit steps of {steps}, {n_min} regenerated, {report['nfe']} "
                f"model evaluations (NFE); RMS latent change {report['change']:.4g}")
        return io.NodeOutput(out, ui=ui.PreviewText(text))
