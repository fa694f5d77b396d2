"""FlowMatchSampler (all-in-one), FlowMatchODESampler (-> SAMPLER), FlowMatchScheduler (-> SIGMAS)."""

from __future__ import annotations

import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
from comfy_api.latest import io, ui
from server import PromptServer

from ..samplers.comfy_bridge import sample_flow
from ..samplers.solvers import METHODS
from .latent_fit import model_geometry, require_latent_fits
from .limits import range_problem, require_affordable_work, require_schedule_length, schedule_length_problem
from .optimal_schedule import describe, grid_sigmas, sampler_grid, scheduler_grid
from .sampling_guard import guard_sampler
from .sigmas import MODEL_DEFAULT, SCHEDULES, image_size, schedule_sigmas

DEFAULT_SOLVER = "flow_2m"  # flow-aware, 1 call per step; from ~12 NFE more accurate than euler (docs/solvers.md)


def check_choice(node: str, name: str, value, options) -> bool | str:
    """validate_inputs answer for a combo (ComfyUI 0.3.75 does not check V3 combos itself);
    a linked input arrives as None at queue time and is left to execute."""
    if value is None or value in options:
        return True
    return f"{node}: {name} {value!r} is not one of {list(options)}"


def ode_sampler(solver: str, node: str, report: dict | None = None, show_on: str | None = None) -> comfy.samplers.KSAMPLER:
    """The pack's ODE solver as a ComfyUI SAMPLER, behind the interrupt / non-finite guard.

    `show_on`: a node id whose body shows each run's counts (progress text), for a node
    that executes before the sampling it configures."""
    def show(counts: dict) -> None:
        if show_on is not None and PromptServer.instance is not None:
            PromptServer.instance.send_progress_text(counts_text(solver, counts), show_on)

    return comfy.samplers.KSAMPLER(guard_sampler(sample_flow, node, report, on_counts=show), extra_options={"method": solver})


def counts_text(solver: str, counts: dict) -> str:
    """The sampler nodes' UI line: model evaluations and the solver's accepted / rejected steps."""
    return (f"{solver}: {counts['nfe']} model evaluations (NFE), {counts.get('accepted', 0)} steps accepted, "
            f"{counts.get('rejected', 0)} rejected")


def run_sampler(model, seed, steps, cfg, solver, schedule, shift, positive, negative, latent, denoise, noise=None,
                notes=None):
    """KSampler's recipe with our solver: ComfyUI's noise (or a NOISE such as Flow Match Invert's),
    CFG guider, masks and previews. `notes`, when given, receives a line on the searched grid
    for schedule 'optimal'.

    Returns (latent dict, counts: nfe, steps, accepted, rejected)."""
    require_schedule_length("FlowMatchSampler", steps, denoise)
    require_latent_fits("FlowMatchSampler", model, latent["samples"])
    samples = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    require_affordable_work("FlowMatchSampler", model, samples.shape)
    size = image_size(samples.shape, model_geometry(model).spatial)

    def optimal(total_steps):
        record, from_cache = sampler_grid("FlowMatchSampler", model, positive, negative, cfg, solver, latent)
        if notes is not None:
            notes.append(describe(record, total_steps, from_cache))
        return grid_sigmas("FlowMatchSampler", record, total_steps)

    sigmas = schedule_sigmas(model, schedule, steps, shift, denoise, size, optimal)
    out = latent.copy()
    if len(sigmas) < 2:
        out["samples"] = samples
        return out, {"nfe": 0, "steps": 0, "accepted": 0, "rejected": 0}
    if noise is None:
        noise = comfy.sample.prepare_noise(samples, seed, latent.get("batch_index"))
    else:
        noise = noise.generate_noise({**latent, "samples": samples})
    report = {}
    callback = latent_preview.prepare_callback(model, len(sigmas) - 1)
    out["samples"] = comfy.sample.sample_custom(
        model, noise, cfg, ode_sampler(solver, "FlowMatchSampler", report), sigmas, positive, negative, samples,
        noise_mask=latent.get("noise_mask"), callback=callback,
        disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed,
    )
    return out, report


SOLVER_TOOLTIP = (
    "ODE solver. flow_* solvers step the image estimate with the flow's linear part exact (like ComfyUI's "
    "res_multistep), which suits trained flows; the others are textbook methods on the raw velocity, for teaching. "
    "Model calls (NFE) per step: euler, flow_2m, flow_3m, flow_reuse 1 (flow_3m and flow_reuse add 1 per run); "
    "flow_midpoint, midpoint, heun 2; rk3 3; rk4 4; dopri5 picks its own steps. "
    "Which to pick (bundled model, cfg 4): with the 'sd3 shift' schedule (shift 3) flow_reuse is the most "
    "accurate from 6 NFE on; with a uniform schedule euler up to ~8 NFE, flow_reuse or flow_2m from 12. "
    "flow_3m overshoots at high cfg."
)
SCHEDULE_TOOLTIP = (
    "model default: the model's own shift (and any ModelSampling node), same as KSampler 'simple'; "
    "uniform: evenly spaced; sd3 shift: uses the shift input; flux resolution shift: shift grows with image size; "
    "optimal: the grid searched for this model and solver (shipped for the bundled model; otherwise searched once "
    "on the first prompt, a few minutes, then cached in user/__flowmatch_schedules; see Flow Match Optimal Schedule)."
)


class FlowMatchSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlowMatchSampler",
            display_name="Flow Match Sampler",
            category="flow_matching/sampling",
            description=(
                "Samples a flow-matching model (the bundled one or SD3, Flux, AuraFlow, Wan ...) by solving its ODE from "
                "noise to image, with ComfyUI's own noise, CFG, masks and previews. Shows how many model evaluations "
                "(NFE) the run used and the solver's accepted and rejected steps. With euler and 'model default' it "
                "matches KSampler (euler, simple)."
            ),
            inputs=[
                io.Model.Input("model", tooltip="A flow-matching model, e.g. from Flow Match Model Loader."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seed of the starting noise; the same seed gives the same image."),
                io.Int.Input("steps", default=20, min=1, max=1000, tooltip="Number of solver steps."),
                io.Float.Input("cfg", default=4.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip=("Classifier-free guidance: how strongly to follow the prompt (1 = off, faster). "
                                        "For 3-4 steps, limit it with Flow Match Guidance Interval.")),
                io.Combo.Input("solver", options=list(METHODS), default=DEFAULT_SOLVER, tooltip=SOLVER_TOOLTIP),
                io.Combo.Input("schedule", options=list(SCHEDULES), default=MODEL_DEFAULT, tooltip=SCHEDULE_TOOLTIP),
                io.Float.Input("shift", default=3.0, min=0.01, max=100.0, step=0.01,
                               tooltip="Shift for the 'sd3 shift' schedule (higher spends more steps near noise)."),
                io.Conditioning.Input("positive", tooltip="What the image should show."),
                io.Conditioning.Input("negative", tooltip="What to steer away from; an empty prompt for plain CFG."),
                io.Latent.Input("latent_image", tooltip="The starting latent: an empty latent, or an encoded image for img2img."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="How much of the schedule to run: 1 = from pure noise, less keeps more of the input."),
                io.Noise.Input("noise", optional=True,
                               tooltip="Optional starting noise instead of the seed's, e.g. from Flow Match Invert."),
            ],
            outputs=[io.Latent.Output(tooltip="The sampled latent; decode it with VAE Decode.")],
        )

    @classmethod
    def validate_inputs(cls, solver, schedule, steps, cfg, shift, denoise):
        node = "FlowMatchSampler"
        ranges = {"steps": (steps, 1, 1000), "cfg": (cfg, 0.0, 100.0), "shift": (shift, 0.01, 100.0),
                  "denoise": (denoise, 0.0, 1.0)}
        problem = range_problem(node, ranges) or schedule_length_problem(node, steps, denoise)
        if problem:
            return problem
        solver_ok = check_choice(node, "solver", solver, METHODS)
        return solver_ok if solver_ok is not True else check_choice(node, "schedule", schedule, SCHEDULES)

    @classmethod
    def execute(cls, model, seed, steps, cfg, solver, schedule, shift, positive, negative, latent_image,
                denoise, noise=None) -> io.NodeOutput:
        notes = []
        latent, counts = run_sampler(model, seed, steps, cfg, solver, schedule, shift, positive, negative, latent_image,
                                     denoise, noise, notes)
        return io.NodeOutput(latent, ui=ui.PreviewText("\n".join([counts_text(solver, counts), *notes])))


class FlowMatchODESampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlowMatchODESampler",
            display_name="Flow Match ODE Sampler",
            category="flow_matching/sampling",
            description=(
                "The pack's flow ODE solvers as a SAMPLER for SamplerCustomAdvanced / SamplerCustom. "
                "Pair it with Flow Match Scheduler (or any SIGMAS). After each run this node shows the model "
                "evaluations (NFE) and the accepted and rejected steps."
            ),
            inputs=[io.Combo.Input("solver", options=list(METHODS), default=DEFAULT_SOLVER, tooltip=SOLVER_TOOLTIP)],
            outputs=[io.Sampler.Output(tooltip="A sampler for SamplerCustomAdvanced.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, solver):
        return check_choice("FlowMatchODESampler", "solver", solver, METHODS)

    @classmethod
    def execute(cls, solver) -> io.NodeOutput:
        return io.NodeOutput(ode_sampler(solver, "FlowMatchODESampler", show_on=cls.hidden.unique_id))


class FlowMatchScheduler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlowMatchScheduler",
            display_name="Flow Match Scheduler",
            category="flow_matching/sampling",
            description=(
                "Flow-matching sigmas (1 = noise to 0 = image) for SamplerCustomAdvanced: the model's default, uniform, "
                "SD3 shift or Flux resolution-dependent shift."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The model to schedule for ('model default' reads its shift)."),
                io.Combo.Input("schedule", options=list(SCHEDULES), default=MODEL_DEFAULT, tooltip=SCHEDULE_TOOLTIP),
                io.Int.Input("steps", default=20, min=1, max=1000, tooltip="Number of solver steps."),
                io.Float.Input("shift", default=3.0, min=0.01, max=100.0, step=0.01,
                               tooltip="Shift for the 'sd3 shift' schedule."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="1 = from pure noise; less keeps only the last part of the schedule (img2img)."),
                io.Int.Input("width", default=1024, min=16, max=16384, step=16,
                             tooltip="Image width in pixels, for 'flux resolution shift'."),
                io.Int.Input("height", default=1024, min=16, max=16384, step=16,
                             tooltip="Image height in pixels, for 'flux resolution shift'."),
                io.Combo.Input("solver", options=list(METHODS), default=DEFAULT_SOLVER, optional=True,
                               tooltip="For 'optimal': the solver the grid was searched for (use the one your sampler "
                                       "runs). This node has no prompt to search with: it uses a grid searched before "
                                       "for this model and solver (shipped for the bundled model)."),
            ],
            outputs=[io.Sigmas.Output(tooltip="Sigmas from high to 0.")],
        )

    @classmethod
    def validate_inputs(cls, schedule, steps, shift, denoise, solver=DEFAULT_SOLVER):
        node = "FlowMatchScheduler"
        ranges = {"steps": (steps, 1, 1000), "shift": (shift, 0.01, 100.0), "denoise": (denoise, 0.0, 1.0)}
        problem = range_problem(node, ranges) or schedule_length_problem(node, steps, denoise)
        if problem:
            return problem
        schedule_ok = check_choice(node, "schedule", schedule, SCHEDULES)
        return schedule_ok if schedule_ok is not True else check_choice(node, "solver", solver, METHODS)

    @classmethod
    def execute(cls, model, schedule, steps, shift, denoise, width, height, solver=DEFAULT_SOLVER) -> io.NodeOutput:
        require_schedule_length("FlowMatchScheduler", steps, denoise)

        def optimal(total_steps):
            return grid_sigmas("FlowMatchScheduler", scheduler_grid("FlowMatchScheduler", model, solver), total_steps)

        return io.NodeOutput(schedule_sigmas(model, schedule, steps, shift, denoise, (width, height), optimal))
