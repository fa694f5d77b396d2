"""Reflow (Liu et al. 2022, rectified flow): straighten a flow by retraining it on its own pairs.

``python -m comfyui_flowmatch.models.reflow`` (``make train-reflow`` is the shipped recipe):

1. **Pairs.** The teacher checkpoint integrates noise x0 to an image x1 with a solver
   (the CLI's default: midpoint, 10 uniform steps, 20 velocity calls; `make train-reflow`:
   flow_reuse, 12 steps on a shift-3 grid, 13 calls) at its CFG (4) for captions of the
   training distribution (`ShapesDataset`, held-out colour/shape pairs excluded). Shards of `--shard-size`
   pairs go to ``<run-dir>/pairs/pairs_<k>.safetensors`` (tensors ``noise`` and ``image``
   in model space [-1, 1], fp32; captions in the metadata). Pair j uses noise seeded
   ``PAIR_SEED_OFFSET + seed * 10**7 + j``, far from the seeds evaluation uses. Existing
   shards are kept, so an interrupted run resumes where it stopped; generation stops at
   `--pairs` pairs or when `--pairs-time-budget-s` is spent (the seconds every shard took
   are stored in it and count against the budget across invocations).
2. **Student.** A copy of the teacher is trained with the seed's loss on the straight
   paths between the pairs: x_t = (1 - t) x0 + t x1, target v = x1 - x0, always with the
   pair's caption. Guidance is baked in: the student predicts the guided velocity, so it
   samples with one model call per step at CFG 1 (1-2 Euler steps). The optimisation is
   `models.train`'s (AdamW, warm-up + cosine, clipping, EMA, time budget, `--resume`,
   ``torchrun``); t is drawn "uniform_zero" by default (a quarter at t = 0 exactly, the
   point a one-step sampler evaluates) and the loss is weighted as the data estimate's
   error (``--loss-weighting data``), so the one- and two-step points count as much as t
   near 1 (with the plain velocity loss, samples near t = 1 weigh up to 400 times more).
   ``--filter-pairs`` drops the pairs whose image fails the analytic adherence check
   (`models.evaluate.judge`), i.e. the teacher's visible mistakes.

Under ``torchrun`` rank r writes shards k with k % N == r (the run dir must be on a
filesystem all ranks share), then all ranks train on every shard.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from ..samplers import integrate, time_grid
from .checkpoint import FlowMatchBundle, atomic_save_file, load_checkpoint
from .data import ShapesDataset
from .cli_args import run_cli
from .distributed import Distributed, barrier
from .generate import DEFAULT_CHECKPOINT, guided_velocity, initial_noise
from .train import (
    EMA, TrainConfig, add_runtime_arguments, add_train_config_arguments, load_train_state, new_run, sample_t,
    run_in_process_group, save_sample_grid, train,
)

logger = logging.getLogger(__name__)

PAIR_SEED_OFFSET = 1_000_000
REFLOW_DEFAULTS = TrainConfig(steps=3000, batch_size=64, lr=3e-4, warmup=50, ema_decay=0.999,
                              t_sampling="uniform_zero", loss_weighting="data", caption_dropout=0.0,
                              save_every=250, sample_every=500)


@torch.no_grad()
def teacher_images(bundle: FlowMatchBundle, noise: torch.Tensor, captions: list[str], *, method: str,
                   steps: int, cfg: float, shift: float = 1.0) -> torch.Tensor:
    """Integrate `noise` [B, C, H, W] from t=0 to 1 with the guided teacher velocity
    v_u + cfg (v_c - v_u) on `samplers.time_grid(steps, shift=shift)` (shift 1: uniform);
    returns x1 in model space."""
    velocity = guided_velocity(bundle, captions, cfg)
    ts = time_grid(steps, shift=shift).to(device=noise.device, dtype=noise.dtype)
    return integrate(velocity, noise, ts, method=method).state


def shard_path(pairs_dir: Path, index: int) -> Path:
    return pairs_dir / f"pairs_{index:05d}.safetensors"


def generate_pairs(bundle: FlowMatchBundle, pairs_dir: Path, *, pairs: int, shard_size: int, method: str,
                   steps: int, cfg: float, seed: int, time_budget_s: float, where: Distributed,
                   shift: float = 1.0) -> None:
    """Write this rank's missing shards until `pairs` pairs exist or the time budget (0 = none) is spent."""
    pairs_dir.mkdir(parents=True, exist_ok=True)
    dit = bundle.dit
    device = next(dit.parameters()).device
    side, channels = dit.config.image_size, dit.config.channels
    captions_source = ShapesDataset(seed=seed, size=side)
    spent = sum(shard_seconds(path) for path in pairs_dir.glob("pairs_*.safetensors")) / where.world
    for index in range(where.rank, -(-pairs // shard_size), where.world):
        path = shard_path(pairs_dir, index)
        if path.exists():
            continue
        if time_budget_s and spent >= time_budget_s:
            logger.info("pair time budget spent (%.0f s); stopping before shard %d", spent, index)
            break
        first = index * shard_size
        captions = [spec.caption for spec in captions_source.specs(index, shard_size)]
        noise = initial_noise(shard_size, channels, side, side, PAIR_SEED_OFFSET + seed * 10**7 + first)
        t0 = time.perf_counter()
        images = teacher_images(bundle, noise.to(device), captions, method=method, steps=steps, cfg=cfg, shift=shift)
        seconds = time.perf_counter() - t0
        atomic_save_file({"noise": noise.contiguous(), "image": images.float().cpu().contiguous()}, path,
                         {"captions": json.dumps(captions), "first_pair": str(first), "method": method,
                          "steps": str(steps), "shift": str(shift), "cfg": str(cfg), "seconds": f"{seconds:.1f}"})
        spent += seconds
        logger.info("shard %d: %d pairs in %.1f s", index, shard_size, seconds)


def shard_seconds(path: Path) -> float:
    """Seconds the teacher took to draw a shard (recorded in its metadata)."""
    with safe_open(str(path), framework="pt") as f:
        return float(f.metadata().get("seconds", 0.0))


def load_pairs(pairs_dir: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """All shards of `pairs_dir`: (noise [N, C, H, W], image [N, C, H, W], captions)."""
    noises, images, captions = [], [], []
    for path in sorted(pairs_dir.glob("pairs_*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            noises.append(f.get_tensor("noise"))
            images.append(f.get_tensor("image"))
            captions.extend(json.loads(f.metadata()["captions"]))
    if not noises:
        raise ValueError(f"no pair shards in {pairs_dir}; run the pair stage first")
    return torch.cat(noises), torch.cat(images), captions


def judged_valid(image: torch.Tensor, captions: list[str]) -> torch.Tensor:
    """Boolean [N]: the pairs whose image shows its caption (`models.evaluate.judge`: colour, shape,
    background and, where asked, position). Only for captions of the procedural shapes data."""
    from .evaluate import judge

    pixels = ((image + 1) / 2).clamp(0, 1)
    verdicts = [judge(x, caption) for x, caption in zip(pixels, captions)]
    return torch.tensor([v["all"] and v.get("position", True) for v in verdicts])


class PairBatches:
    """Global batch of step k over stored pairs: (ids, image, noise, t), a pure function of (seed, k)."""

    def __init__(self, noise: torch.Tensor, image: torch.Tensor, ids: torch.Tensor, config: TrainConfig) -> None:
        self.noise, self.image, self.ids, self.config = noise, image, ids, config

    def __call__(self, step: int) -> tuple[torch.Tensor, ...]:
        rng = np.random.default_rng([self.config.seed, step])
        idx = torch.as_tensor(rng.integers(len(self.noise), size=self.config.batch_size))
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + step)
        t = sample_t(len(idx), self.config.t_sampling, gen)
        return self.ids[idx], self.image[idx], self.noise[idx], t


def student_from_teacher(teacher: FlowMatchBundle, config: TrainConfig, where: Distributed):
    """A `train.Run` whose weights and EMA start as the teacher's."""
    run = new_run(teacher.dit.config, teacher.text_encoder.config, teacher.tokenizer, config, where.device, where)
    run.dit.load_state_dict(teacher.dit.state_dict())
    run.text_encoder.load_state_dict(teacher.text_encoder.state_dict())
    run.ema = EMA([run.dit, run.text_encoder], config.ema_decay)
    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m comfyui_flowmatch.models.reflow", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default=str(DEFAULT_CHECKPOINT), help="teacher checkpoint (.safetensors)")
    parser.add_argument("--output", required=True, help="student EMA checkpoint path (.safetensors)")
    parser.add_argument("--run-dir", required=True, help="folder for pairs/, train state, log and sample grids")
    parser.add_argument("--pairs", type=int, default=8192, help="number of (noise, image) pairs to draw")
    parser.add_argument("--shard-size", type=int, default=128, help="pairs per shard file")
    parser.add_argument("--pairs-time-budget-s", type=float, default=0.0,
                        help="stop drawing new pairs after this many seconds (0 = no budget)")
    parser.add_argument("--teacher-method", default="midpoint", help="samplers method for the teacher")
    parser.add_argument("--teacher-steps", type=int, default=10, help="teacher solver steps")
    parser.add_argument("--teacher-shift", type=float, default=1.0,
                        help="SD3 shift of the teacher's time grid (1 = uniform; 3 spends the steps near the noise)")
    parser.add_argument("--cfg", type=float, default=4.0, help="teacher guidance scale (baked into the student)")
    parser.add_argument("--filter-pairs", action="store_true",
                        help="train only on pairs whose image passes models.evaluate.judge (shapes captions only)")
    parser.add_argument("--resume", action="store_true", help="continue training from <run-dir>/train_state.safetensors")
    add_runtime_arguments(parser)
    add_train_config_arguments(parser, REFLOW_DEFAULTS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI: 0, or 2 with a one-line error (bad option, unreadable teacher, unresumable state)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_cli(parser.prog, lambda: run_in_process_group(args, reflow))


def reflow(args: argparse.Namespace, where: Distributed) -> None:
    for name in ("pairs", "shard_size", "teacher_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not (math.isfinite(args.teacher_shift) and args.teacher_shift > 0):
        raise ValueError(f"--teacher-shift must be a finite number > 0, got {args.teacher_shift}")
    config = TrainConfig(**{f: getattr(args, f) for f in asdict(TrainConfig())})
    run_dir, pairs_dir = Path(args.run_dir), Path(args.run_dir) / "pairs"
    teacher = load_checkpoint(args.teacher, where.device)
    generate_pairs(teacher, pairs_dir, pairs=args.pairs, shard_size=args.shard_size, method=args.teacher_method,
                   steps=args.teacher_steps, cfg=args.cfg, seed=config.seed,
                   time_budget_s=args.pairs_time_budget_s, where=where, shift=args.teacher_shift)
    barrier(where)
    noise, image, captions = load_pairs(pairs_dir)
    drawn = len(noise)
    if args.filter_pairs:
        keep = judged_valid(image, captions)
        noise, image, captions = noise[keep], image[keep], [c for c, k in zip(captions, keep.tolist()) if k]
        logger.info("kept %d of %d pairs whose image shows its caption", len(noise), drawn)
    pair_seconds = sum(shard_seconds(path) for path in pairs_dir.glob("pairs_*.safetensors"))
    logger.info("%d pairs (%.0f s of teacher time)", len(noise), pair_seconds)
    run = student_from_teacher(teacher, config, where)
    if args.resume:
        load_train_state(run, run_dir / "train_state.safetensors")
        logger.info("resumed at step %d (%.0f s trained)", run.step, run.elapsed_s)
    batches = PairBatches(noise, image, teacher.tokenizer(captions), config)
    facts = {"reflow": {"teacher": Path(args.teacher).name, "teacher_method": args.teacher_method,
                        "teacher_steps": args.teacher_steps, "teacher_shift": args.teacher_shift,
                        "teacher_cfg": args.cfg, "pairs_drawn": drawn,
                        "pairs": len(noise), "filter_pairs": args.filter_pairs,
                        "pair_seconds": round(pair_seconds, 1)},
             "sampling": {"cfg": 1.0, "steps": [1, 2], "method": "euler"}}
    sample_grid = lambda run, path: save_sample_grid(run, path, settings=((1, 1.0), (2, 1.0)))  # noqa: E731
    train(run, None, config, run_dir, Path(args.output), f"reflow of {Path(args.teacher).name}",
          batches=batches, sample_grid=sample_grid, extra_facts=facts)


if __name__ == "__main__":
    sys.exit(main())
