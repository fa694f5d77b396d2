"""How straight a checkpoint's flow is (``python -m comfyui_flowmatch.models.straightness``).

For each checkpoint, integrates the guided velocity from the same noise for the same
prompts (evaluation prompts, half seen and half held-out combinations) and reports
`samplers.straightness`' normalised S (0 = straight paths) and its per-t profile. The CFG
of a checkpoint defaults to what it is meant to be sampled at: 1 for a reflowed checkpoint
(its metadata says so), 4 otherwise. ``--plot`` draws the profiles together.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from ..samplers.straightness import Straightness, measure_straightness
from .checkpoint import FlowMatchBundle, load_checkpoint
from .evaluate import evaluation_prompts
from .generate import DEFAULT_CHECKPOINT, guided_velocity, initial_noise

logger = logging.getLogger(__name__)


def sampling_cfg(bundle: FlowMatchBundle) -> float:
    """The CFG a checkpoint is meant for: its training facts' ``sampling.cfg``, else 4."""
    return float(bundle.metadata["training"].get("sampling", {}).get("cfg", 4.0))


@torch.no_grad()
def checkpoint_straightness(bundle: FlowMatchBundle, prompts: list[str], *, cfg: float, steps: int, method: str,
                            seed: int) -> Straightness:
    """Straightness of `bundle`'s guided flow from noise seeded ``seed + i`` for prompt i."""
    config = bundle.dit.config
    device = next(bundle.dit.parameters()).device
    x0 = initial_noise(len(prompts), config.channels, config.image_size, config.image_size, seed).to(device)
    ts = torch.linspace(0.0, 1.0, steps + 1, device=device)
    return measure_straightness(guided_velocity(bundle, prompts, cfg), x0, ts, method)


def plot_profiles(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    for row in rows:
        ax.plot(row["ts"], row["profile"], lw=1.2, label=f"{row['checkpoint']} (cfg {row['cfg']:g}): S = {row['S']:.4f}")
    ax.set_xlabel("t (0 = noise, 1 = data)")
    ax.set_ylabel("E‖(x1 − x0) − v(x_t, t)‖² / E‖x1 − x0‖²")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m comfyui_flowmatch.models.straightness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", nargs="+", default=[str(DEFAULT_CHECKPOINT)], help="checkpoint file(s)")
    parser.add_argument("--cfg", type=float, nargs="+", default=None,
                        help="CFG per checkpoint (default: 1 for reflowed checkpoints, else 4)")
    parser.add_argument("--samples", type=int, default=64, help="trajectories (half seen, half held-out prompts)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--method", default="midpoint", help="samplers method for the trajectories")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--plot", default=None, help="write the per-t profiles to this PNG")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.samples < 2 or args.steps < 1:
        raise SystemExit(f"need --samples >= 2 and --steps >= 1, got {args.samples} and {args.steps}")
    if args.cfg is not None and len(args.cfg) != len(args.checkpoint):
        raise SystemExit(f"--cfg takes one value per checkpoint ({len(args.checkpoint)}), got {len(args.cfg)}")
    prompts = evaluation_prompts("seen", args.samples // 2) + evaluation_prompts("held_out", args.samples - args.samples // 2)
    rows = []
    for i, path in enumerate(args.checkpoint):
        bundle = load_checkpoint(path)
        cfg = args.cfg[i] if args.cfg else sampling_cfg(bundle)
        result = checkpoint_straightness(bundle, prompts, cfg=cfg, steps=args.steps, method=args.method, seed=args.seed)
        rows.append({"checkpoint": Path(path).name, "cfg": cfg, "S": result.value, "S_per_dim": result.per_dim,
                     "method": args.method, "steps": args.steps, "samples": len(prompts),
                     "ts": result.ts.tolist(), "profile": result.profile.tolist()})
        print(f"{Path(path).name}: cfg {cfg:g}, {args.method} {args.steps} steps, {len(prompts)} trajectories: "
              f"S = {result.value:.5f} (normalised; 0 = straight), {result.per_dim:.5f} per dimension")
    if len(rows) > 1:
        print(f"ratio {rows[1]['checkpoint']} / {rows[0]['checkpoint']}: {rows[1]['S'] / rows[0]['S']:.3f}")
    if args.plot:
        plot_profiles(rows, Path(args.plot))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
