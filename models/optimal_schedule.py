"""Search optimal sigma grids for a checkpoint without ComfyUI:
``python -m comfyui_flowmatch.models.optimal_schedule --solvers euler midpoint --steps 4 8``.

Runs `samplers.optimal.search` on the checkpoint's classifier-free-guided velocity over a
calibration batch: `--calibration` captions of the training ("seen") split drawn with
seed 4321 and noise seeds 1000 + i, so they differ from the prompt/seed pairs the quality
benchmark scores. Records go to the cache (`--cache`, default
`samplers.optimal.default_cache_folder()`); a second run with the same settings is read
from it. `--ship` also writes them into `samplers/optimal_schedules.json`, the grids
FlowMatchSampler's `optimal` schedule uses for the bundled model without searching.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from ..samplers import optimal
from .checkpoint import load_checkpoint
from .evaluate import evaluation_prompts
from .generate import DEFAULT_CHECKPOINT, guided_velocity, initial_noise

logger = logging.getLogger(__name__)

CALIBRATION_PROMPT_SEED = 4321
CALIBRATION_NOISE_SEED = 1000


def calibration(count: int) -> tuple[list[str], int]:
    """The calibration captions and the first noise seed (sample i uses seed + i)."""
    return evaluation_prompts("seen", count, seed=CALIBRATION_PROMPT_SEED), CALIBRATION_NOISE_SEED


def fingerprint(bundle) -> str:
    """The weights fingerprint the nodes compute for the same checkpoint in ComfyUI."""
    return optimal.weights_fingerprint(bundle.dit.state_dict())


def search_checkpoint(checkpoint: str | Path, solvers: list[str], cfg: float, count: int, candidates: int,
                      substeps: int, cache: optimal.ScheduleCache, objective: str | None = None,
                      max_steps: int = optimal.DEFAULT_MAX_STEPS) -> list[tuple[optimal.SearchRecord, bool]]:
    """(record, from_cache) per solver for the checkpoint at `checkpoint`."""
    bundle = load_checkpoint(str(checkpoint))
    prompts, seed = calibration(count)
    side = bundle.dit.config.image_size
    noise = initial_noise(count, bundle.dit.config.channels, side, side, seed)
    denoiser = optimal.denoiser_from_velocity(guided_velocity(bundle, prompts, cfg))
    description = {"cfg": cfg, "latent": list(noise.shape), "prompts": f"{count} seen-split captions, seed "
                   f"{CALIBRATION_PROMPT_SEED}", "noise_seed": seed}
    model = fingerprint(bundle)
    results, shared = [], None
    for solver in solvers:
        settings = optimal.SearchSettings(solver, description, candidates, substeps,
                                          objective or optimal.default_objective(solver), max_steps)
        found = cache.load(model, settings)
        if found is not None:
            results.append((found, True))
            continue

        def progress(done: int, total: int, solver=solver) -> None:
            logger.info("%s: costs from candidate %d/%d", solver, done, total)

        shared = shared or optimal.reference(denoiser, noise, candidates, substeps)
        record = optimal.search(denoiser, noise, settings, model, progress=progress, shared=shared)
        cache.save(record)
        results.append((record, False))
    return results


def main(argv: list[str] | None = None) -> None:
    searchable = [name for name in optimal.SEARCHABLE if name not in optimal.SEARCHED_AS]
    parser = argparse.ArgumentParser(prog="python -m comfyui_flowmatch.models.optimal_schedule", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--solvers", nargs="+", default=["euler"], choices=searchable,
                        help="solvers to search (flow_3m and flow_reuse use flow_2m's grid)")
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 8], help="step counts to print grids for")
    parser.add_argument("--cfg", type=float, default=4.0)
    parser.add_argument("--calibration", type=int, default=8, help="calibration prompt/noise pairs")
    parser.add_argument("--candidates", type=int, default=optimal.DEFAULT_CANDIDATES)
    parser.add_argument("--substeps", type=int, default=optimal.DEFAULT_SUBSTEPS)
    parser.add_argument("--objective", choices=optimal.OBJECTIVES, default=None,
                        help="default: propagated for euler, flow_2m and flow_midpoint, local for the others")
    parser.add_argument("--max-steps", type=int, default=optimal.DEFAULT_MAX_STEPS,
                        help="largest step count a propagated search covers")
    parser.add_argument("--cache", type=Path, default=None, help="cache folder (default: %(default)s = the user cache)")
    parser.add_argument("--ship", action="store_true", help="also write the records into samplers/optimal_schedules.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cache = optimal.ScheduleCache(args.cache or optimal.default_cache_folder())
    with torch.no_grad():
        results = search_checkpoint(args.checkpoint, args.solvers, args.cfg, args.calibration, args.candidates,
                                    args.substeps, cache, args.objective, args.max_steps)
    lines = []
    for record, from_cache in results:
        origin = "cache" if from_cache else f"searched: {record.nfe} model evaluations, {record.seconds:.0f} s"
        lines.append(f"{record.settings['method']} ({origin}; {cache.folder})")
        for steps in args.steps:
            sigmas, total = record.grid(steps)
            score = "end-point RMS" if record.settings.get("objective") == "propagated" else "summed step error"
            lines.append(f"  {steps} steps, {score} {total:.4g}: " + ", ".join(f"{s:.4f}" for s in sigmas.tolist()))
        if args.ship:
            optimal.ship(record)
    print("\n".join(lines))  # the CLI's output


if __name__ == "__main__":
    main()
