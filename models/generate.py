"""Text-to-image with a loaded checkpoint, no ComfyUI: classifier-free guidance + `samplers.integrate`.

Seed convention: start from noise at t=0, integrate the guided velocity
v = v_u + cfg * (v_c - v_u) to t=1 (data). Sample i of a call uses noise from
``torch.Generator().manual_seed(seed + i)``, so an image does not depend on the
batch it was drawn in.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import torch
from PIL import Image

from ..samplers import integrate
from .checkpoint import FlowMatchBundle, load_checkpoint
from .text import encode_prompts

logger = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "weights" / "flowmatch_shapes.safetensors"


def initial_noise(batch: int, channels: int, height: int, width: int, seed: int) -> torch.Tensor:
    """Noise [batch, C, H, W]; sample i drawn from its own generator seeded `seed + i`."""
    return torch.stack([
        torch.randn(channels, height, width, generator=torch.Generator().manual_seed(seed + i))
        for i in range(batch)
    ])


def guided_velocity(bundle: FlowMatchBundle, prompts: list[str], cfg: float, negative: str = ""):
    """velocity(x [B, C, H, W], t [B]) -> the guided v = v_u + cfg (v_c - v_u) for B = len(prompts)
    (cfg 1: v_c alone, one network call). Call it under `torch.no_grad()` unless gradients are wanted."""
    dit = bundle.dit
    context, pooled = encode_prompts(bundle.tokenizer, bundle.text_encoder, list(prompts))
    if cfg != 1.0:
        u_context, u_pooled = encode_prompts(bundle.tokenizer, bundle.text_encoder, [negative] * len(prompts))
        context, pooled = torch.cat([context, u_context]), torch.cat([pooled, u_pooled])

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if cfg == 1.0:
            return dit(x, t, context, pooled)
        v_c, v_u = dit(torch.cat([x, x]), torch.cat([t, t]), context, pooled).chunk(2)
        return v_u + cfg * (v_c - v_u)

    return velocity


@torch.no_grad()
def generate_images(
    bundle: FlowMatchBundle,
    prompts: list[str],
    *,
    steps: int = 20,
    method: str = "euler",
    cfg: float = 4.0,
    seed: int = 0,
    size: int | None = None,
    negative: str = "",
) -> torch.Tensor:
    """Generate one image per prompt.

    Args:
        bundle: a loaded checkpoint (`load_checkpoint`).
        prompts: B prompts.
        steps: solver steps on the uniform grid ``linspace(0, 1, steps + 1)``.
        method: a `samplers` method name (``euler``, ``midpoint``, ...).
        cfg: guidance scale; 1.0 disables guidance (one network call per evaluation).
        seed: sample i uses noise seeded ``seed + i``.
        size: image side in pixels (multiple of the patch); default the native size.
        negative: the unconditional prompt (``""`` = the trained unconditional embedding).

    Returns:
        Images [B, 3, size, size] in [0, 1] on the bundle's device.

    Raises:
        ValueError: empty prompt list, steps < 1.
    """
    if not prompts:
        raise ValueError("prompts must not be empty")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    dit = bundle.dit
    device = next(dit.parameters()).device
    side = size or dit.config.image_size
    b = len(prompts)
    velocity = guided_velocity(bundle, list(prompts), cfg, negative)
    x = initial_noise(b, dit.config.channels, side, side, seed).to(device)
    ts = torch.linspace(0.0, 1.0, steps + 1, device=device)
    x = integrate(velocity, x, ts, method=method)
    return ((x + 1) / 2).clamp(0, 1)


def image_grid(images: torch.Tensor, columns: int | None = None) -> Image.Image:
    """Tile images [B, 3, H, W] in [0, 1] into one PIL image (row-major)."""
    b, _, h, w = images.shape
    cols = columns or math.ceil(math.sqrt(b))
    rows = math.ceil(b / cols)
    grid = torch.zeros(3, rows * h, cols * w)
    for i, image in enumerate(images.float().cpu()):
        r, c = divmod(i, cols)
        grid[:, r * h:(r + 1) * h, c * w:(c + 1) * w] = image
    array = (grid.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    return Image.fromarray(array)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m comfyui_flowmatch generate",
                                     description="Generate images with the bundled flow-matching model.")
    parser.add_argument("prompt", help='e.g. "a red circle on a black background"')
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--solver", default="euler", help="samplers method: euler, midpoint, heun, rk4, ...")
    parser.add_argument("--cfg", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=None, help="image side (multiple of the patch size)")
    parser.add_argument("--scale", type=int, default=4, help="nearest-neighbour upscale of the saved PNG")
    parser.add_argument("-o", "--output", default="out.png")
    return parser


def main(argv: list[str] | None = None) -> None:
    """CLI: generate `--batch` images of one prompt and save them as one PNG grid."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.batch < 1:
        raise SystemExit(f"--batch must be >= 1, got {args.batch}")
    bundle = load_checkpoint(args.checkpoint)
    images = generate_images(bundle, [args.prompt] * args.batch, steps=args.steps, method=args.solver,
                             cfg=args.cfg, seed=args.seed, size=args.size)
    grid = image_grid(images)
    grid = grid.resize((grid.width * args.scale, grid.height * args.scale), Image.NEAREST)
    grid.save(args.output)
    logger.info("saved %d image(s) to %s", args.batch, args.output)


if __name__ == "__main__":
    main()
