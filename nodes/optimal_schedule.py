"""Searched ("optimal") sigma grids in ComfyUI: FlowMatchOptimalSchedule and the `optimal`
schedule of FlowMatchSampler / FlowMatchScheduler.

The search itself is `samplers.optimal`; here it runs inside ComfyUI's own sampling path
(noise, conditioning, CFG guider): a KSAMPLER whose function searches instead of sampling
receives exactly the denoiser FlowMatchSampler would step. Grids are cached in ComfyUI's
user directory (user/__flowmatch_schedules/), keyed by the model's weights fingerprint and
the search settings; the bundled model's grids ship with the pack
(`samplers/optimal_schedules.json`).
"""

from __future__ import annotations

import hashlib

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io, ui

from ..samplers import optimal
from ..samplers.methods import METHODS
from .comfy_model import ComfyVelocityNet

CACHE_NAME = "flowmatch_schedules"


def cache() -> optimal.ScheduleCache:
    return optimal.ScheduleCache(folder_paths.get_system_user_directory(CACHE_NAME))


def model_fingerprint(model) -> str:
    """Weights fingerprint of a MODEL: the diffusion network's weights (ours unwrapped, so it
    equals the bundled checkpoint's own) and its LoRA/patch keys and strengths. Shift nodes
    do not enter: they change the schedule, not the denoiser, and a grid is in sigma."""
    network = model.model.diffusion_model
    if isinstance(network, ComfyVelocityNet):
        network = network.network
    patches = sorted((key, [(p[0], p[2], str(getattr(p[1], "shape", ""))) for p in value])
                     for key, value in model.patches.items())
    extra = {"patches": patches} if patches else None
    return optimal.weights_fingerprint(network.state_dict(), extra)


def conditioning_fingerprint(conditioning) -> str:
    digest = hashlib.sha256()
    for tensor, extras in conditioning:
        digest.update(tensor.float().cpu().numpy().tobytes())
        for key in sorted(extras):
            if torch.is_tensor(extras[key]):
                digest.update(key.encode() + extras[key].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def searched(node: str, method: str) -> str:
    """The solver a grid for `method` is searched with (`samplers.optimal.SEARCHED_AS`)."""
    try:
        return optimal.searched_method(method)
    except ValueError as error:
        raise ValueError(f"{node}: {error}") from None


def known_record(fingerprint: str, method: str, cfg: float | None = None) -> optimal.SearchRecord | None:
    """A grid searched before for this model and (searched) solver: shipped with the pack, else
    the latest in the cache (with this cfg when given)."""
    return optimal.shipped_record(fingerprint, method, cfg) or cache().latest(fingerprint, method, cfg)


def run_search(node: str, model, positive, negative, cfg: float, method: str, seed: int, latent: dict,
               description: dict, candidates: int = optimal.DEFAULT_CANDIDATES) -> tuple[optimal.SearchRecord, bool]:
    """Search (or load from the cache) the grid of `method` for this model, prompt, cfg and latent."""
    fingerprint = model_fingerprint(model)
    samples = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    method = searched(node, method)
    # A propagated search covers every step count up to `candidates` (about candidates^2 / 2 model calls).
    settings = optimal.SearchSettings(method, {**description, "cfg": cfg, "latent": list(samples.shape)}, candidates,
                                      objective=optimal.default_objective(method), max_steps=candidates)
    found = cache().load(fingerprint, settings)
    if found is not None:
        return found, True
    progress = comfy.utils.ProgressBar(settings.candidates)
    records = []

    def on_progress(done: int, total: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        progress.update_absolute(done, total)

    def search_sampler(denoiser, x, sigmas, extra_args=None, callback=None, disable=None):
        records.append(optimal.search(denoiser, x, settings, fingerprint, extra_args, on_progress))
        return x

    noise = comfy.sample.prepare_noise(samples, seed, latent.get("batch_index"))
    sigmas = optimal.candidate_sigmas(settings.candidates).float()
    comfy.sample.sample_custom(model, noise, cfg, comfy.samplers.KSAMPLER(search_sampler), sigmas, positive, negative,
                               samples, disable_pbar=True, seed=seed)
    if not records:
        raise RuntimeError(f"{node}: the search did not run (empty sigmas?)")
    cache().save(records[0])
    return records[0], False


def sampler_grid(node: str, model, positive, negative, cfg: float, method: str, latent: dict):
    """`optimal` for FlowMatchSampler: the known grid for this model, solver and cfg, else a
    search on this prompt (seed 0) that later runs reuse whatever their prompt."""
    record = known_record(model_fingerprint(model), searched(node, method), cfg)
    if record is not None:
        return record, True
    return run_search(node, model, positive, negative, cfg, method, 0, latent, {"source": node, "seed": 0})


def scheduler_grid(node: str, model, method: str) -> optimal.SearchRecord:
    """`optimal` for FlowMatchScheduler, which has no prompt to search with: a grid searched
    before for this model and solver, or a clear error saying how to get one."""
    record = known_record(model_fingerprint(model), searched(node, method))
    if record is None:
        raise ValueError(
            f"{node}: no optimal schedule has been searched for this model and solver {method!r} yet. Run Flow Match "
            "Optimal Schedule (or Flow Match Sampler with schedule 'optimal') once with this model and solver, "
            "or pick another schedule."
        )
    return record


def grid_sigmas(node: str, record: optimal.SearchRecord, steps: int) -> torch.Tensor:
    if str(steps) not in record.grids:
        raise ValueError(f"{node}: the searched grids cover 1 to {record.max_steps} steps; use at most that many steps "
                         f"with schedule 'optimal' (or search with more candidates), got {steps}")
    return record.grid(steps)[0]


def describe(record: optimal.SearchRecord, steps: int, from_cache: bool) -> str:
    sigmas, total = record.grid(steps)
    settings = record.settings
    origin = "from the cache/shipped grids (searched earlier)" if from_cache else "searched now"
    propagated = settings.get("objective") == "propagated"
    score = "end-point RMS error" if propagated else "summed step error"
    return (
        f"optimal {steps}-step grid searched for {settings['method']}, {origin}: dynamic programming over "
        f"{record.intervals + 1} candidate sigmas against an rk4 reference ({settings['substeps']} sub-steps per "
        f"candidate interval), {'solver states propagated' if propagated else 'steps from the reference'}, on "
        f"{settings['description']}; search cost {record.nfe} model evaluations, {record.seconds:.0f} s; "
        f"{score} {total:.4g}.\nsigmas: "
        + ", ".join(f"{s:.4f}" for s in sigmas.tolist())
    )


class FlowMatchOptimalSchedule(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlowMatchOptimalSchedule",
            display_name="Flow Match Optimal Schedule",
            category="flow_matching/sampling",
            description=(
                "Searches the sigma grid on which a solver best follows the model's own converged path for this prompt, "
                "cfg and noise (dynamic programming over a dense candidate grid, Pei et al. 2025). The search costs "
                "model evaluations (shown afterwards) and runs once: results are cached in user/__flowmatch_schedules "
                "by model weights and settings, and Flow Match Sampler / Scheduler's 'optimal' schedule reuse them."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The flow-matching model to search for."),
                io.Conditioning.Input("positive", tooltip="The prompt to search on."),
                io.Conditioning.Input("negative", tooltip="The negative prompt (an empty prompt for plain CFG)."),
                io.Float.Input("cfg", default=4.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="The guidance the grid will be used with."),
                io.Combo.Input("solver", options=list(METHODS), default="euler",
                               tooltip="The solver the grid is for (use the same in the sampler)."),
                io.Int.Input("steps", default=8, min=1, max=200, tooltip="Number of solver steps of the output grid."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF,
                             tooltip="Seed of the noise the search runs on."),
                io.Latent.Input("latent_image", tooltip="An empty latent of the size (and batch) to search on."),
                io.Int.Input("candidates", default=optimal.DEFAULT_CANDIDATES, min=4, max=200, optional=True,
                             tooltip="Candidate sigmas the grid is picked from; the search costs about "
                                     "candidates^2 / 2 model evaluations per extra solver stage."),
            ],
            outputs=[io.Sigmas.Output(tooltip="The searched sigmas, 1 to 0, for SamplerCustomAdvanced.")],
            is_output_node=True,  # runs on its own too, to fill the cache the 'optimal' schedules read
        )

    @classmethod
    def validate_inputs(cls, solver):
        if solver is not None and solver not in METHODS:
            return f"FlowMatchOptimalSchedule: solver {solver!r} is not one of {list(METHODS)}"
        return True

    @classmethod
    def execute(cls, model, positive, negative, cfg, solver, steps, seed, latent_image,
                candidates=optimal.DEFAULT_CANDIDATES) -> io.NodeOutput:
        node = "FlowMatchOptimalSchedule"
        if steps > candidates:
            raise ValueError(f"{node}: steps ({steps}) must be at most candidates ({candidates})")
        description = {"positive": conditioning_fingerprint(positive), "negative": conditioning_fingerprint(negative),
                       "seed": seed}
        record, from_cache = run_search(node, model, positive, negative, cfg, solver, seed, latent_image, description,
                                        candidates)
        return io.NodeOutput(grid_sigmas(node, record, steps), ui=ui.PreviewText(describe(record, steps, from_cache)))
