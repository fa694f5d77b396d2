"""Sampling throughput (``python -m comfyui_flowmatch.models.benchmark``): images/s and peak memory.

Measures `generate_images` (CFG on, so two network evaluations per solver step) for each
batch size after one warm-up call. Peak memory is the process's peak resident set size
(CPU) or ``torch.cuda.max_memory_allocated`` (GPU).
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time

import torch

from .checkpoint import load_checkpoint
from .cli_args import MAX_STEPS, CLIParser, device_name, finite_float, int_in, run_cli, solver_name
from .generate import DEFAULT_CHECKPOINT, MAX_BATCH, generate_images

logger = logging.getLogger(__name__)

PROMPT = "a red circle on a black background"


def peak_memory_mib(device: torch.device) -> float:
    """Peak memory so far in MiB: CUDA allocations on GPU, else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def throughput(bundle, batch: int, steps: int, method: str, cfg: float, repeats: int) -> dict:
    """Images/s of `generate_images` at one batch size (best of `repeats` timed calls)."""
    prompts = [PROMPT] * batch
    generate_images(bundle, prompts, steps=steps, method=method, cfg=cfg)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        generate_images(bundle, prompts, steps=steps, method=method, cfg=cfg)
        best = min(best, time.perf_counter() - start)
    return {"batch": batch, "steps": steps, "method": method, "cfg": cfg, "seconds": round(best, 3),
            "images_per_s": round(batch / best, 2)}


def main(argv: list[str] | None = None) -> int:
    """CLI: returns 0, or 2 with a one-line error (arguments, checkpoint) before any timing."""
    parser = CLIParser(prog="python -m comfyui_flowmatch.models.benchmark", description=__doc__)
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--batches", type=int_in(1, MAX_BATCH), nargs="+", default=[1, 16])
    parser.add_argument("--steps", type=int_in(1, MAX_STEPS), default=20)
    parser.add_argument("--method", type=solver_name, default="euler")
    parser.add_argument("--cfg", type=finite_float(), default=4.0)
    parser.add_argument("--repeats", type=int_in(1, 1000), default=3)
    parser.add_argument("--threads", type=int_in(1, 1024), default=None)
    parser.add_argument("--device", type=device_name, default="cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def run() -> None:
        if args.threads:
            torch.set_num_threads(args.threads)
        device = torch.device(args.device)
        bundle = load_checkpoint(args.checkpoint, device)
        logger.info("threads %d, loaded: peak memory %.0f MiB", torch.get_num_threads(), peak_memory_mib(device))
        for batch in args.batches:
            row = throughput(bundle, batch, args.steps, args.method, args.cfg, args.repeats)
            row["peak_memory_mib"] = round(peak_memory_mib(device), 1)
            logger.info(json.dumps(row))

    return run_cli(parser.prog, run)


if __name__ == "__main__":
    sys.exit(main())
