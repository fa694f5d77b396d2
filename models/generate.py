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
import sys
from pathlib import Path

import torch
from PIL import Image

from ..samplers import integrate, time_grid
from .checkpoint import FlowMatchBundle, load_checkpoint
from .cli_args import (
    IMAGE_FORMATS, MAX_SAVED_PIXELS, MAX_STEPS, CLIParser, finite_float, int_in, run_cli, save_image_atomic,
    solver_name, writable_file,
)
from .dit import DiTConfig
from .text import encode_prompts

logger = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "weights" / "flowmatch_shapes.safetensors"
MAX_SIZE_FACTOR = 4
"""`generate` refuses sides above this multiple of the native size (tokens grow with its square)."""
MAX_BATCH = 256
"""Largest --batch of the generate and benchmark CLIs."""
MAX_TOKENS_PER_CALL = 2**16
"""Image tokens one network call of `generate` may hold (batch x (side / patch)^2, doubled by CFG)."""


def initial_noise(batch: int, channels: int, height: int, width: int, seed: int) -> torch.Tensor:
    """Noise [batch, C, H, W]; sample i drawn from its own generator seeded `seed + i`."""
    return torch.stack([
        torch.randn(channels, height, width, generator=torch.Generator().manual_seed(seed + i))
        for i in range(batch)
    ])


def guided_velocity(bundle: FlowMatchBundle, prompts: list[str], cfg: float = 4.0, negative: str = ""):
    """The classifier-free-guided seed-time velocity v(x [B, ...], t [B]) for B = len(prompts)
    prompts: v_u + cfg * (v_c - v_u), cond and uncond in one network call (cfg 1: cond only)."""
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
    shift: float = 1.0,
) -> torch.Tensor:
    """Generate one image per prompt.

    Args:
        bundle: a loaded checkpoint (`load_checkpoint`).
        prompts: B prompts.
        steps: solver steps on the uniform grid ``linspace(0, 1, steps + 1)`` (see `shift`).
        method: a `samplers` method name (``euler``, ``midpoint``, ...).
        cfg: guidance scale; 1.0 disables guidance (one network call per evaluation).
        seed: sample i uses noise seeded ``seed + i``.
        size: image side in pixels (multiple of the patch); default the native size.
        negative: the unconditional prompt (``""`` = the trained unconditional embedding).
        shift: SD3's static shift of the grid (`samplers.time_grid`); 1.0 keeps it uniform.

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
    velocity = guided_velocity(bundle, prompts, cfg, negative)
    x = initial_noise(len(prompts), dit.config.channels, side, side, seed).to(device)
    ts = torch.linspace(0.0, 1.0, steps + 1, device=device) if shift == 1.0 else time_grid(steps, shift=shift).to(device)
    x = integrate(velocity, x, ts, method=method).state
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
    parser = CLIParser(prog="python -m comfyui_flowmatch generate",
                       description="Generate images with the bundled flow-matching model.")
    parser.add_argument("prompt", help='e.g. "a red circle on a black background"')
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--steps", type=int_in(1, MAX_STEPS), default=20)
    parser.add_argument("--solver", type=solver_name, default="euler",
                        help="samplers method: euler, flow_2m, flow_reuse, flow_midpoint, flow_3m, midpoint, heun, "
                             "rk3, rk4, dopri5 (docs/solvers.md)")
    parser.add_argument("--cfg", type=finite_float(), default=4.0, help="guidance scale (1 = no guidance)")
    parser.add_argument("--seed", type=int_in(0), default=0)
    parser.add_argument("--batch", type=int_in(1, MAX_BATCH), default=1)
    parser.add_argument("--size", type=int_in(1), default=None,
                        help=f"image side: a multiple of the patch size, at most {MAX_SIZE_FACTOR}x the native size")
    parser.add_argument("--scale", type=int_in(1, 64), default=4, help="nearest-neighbour upscale of the saved image")
    parser.add_argument("-o", "--output", type=Path, default=Path("out.png"),
                        help=f"image file ({', '.join(IMAGE_FORMATS)}); its folder is created if missing")
    return parser


def check_size(size: int | None, config: DiTConfig, batch: int, scale: int, cfg: float) -> int:
    """The image side to generate, if the model and the saved grid allow it.

    Raises:
        ValueError: not a multiple of the patch, above `MAX_SIZE_FACTOR` x native, more than
            `MAX_TOKENS_PER_CALL` tokens per network call, or a saved grid above `MAX_SAVED_PIXELS`.
    """
    side = size or config.image_size
    if side % config.patch:
        raise ValueError(f"--size {side} is not a multiple of the model's patch size {config.patch}")
    if side > MAX_SIZE_FACTOR * config.image_size:
        raise ValueError(f"--size {side} is above {MAX_SIZE_FACTOR}x the model's native {config.image_size} px "
                         f"(at most {MAX_SIZE_FACTOR * config.image_size})")
    tokens = batch * (side // config.patch) ** 2 * (2 if cfg != 1.0 else 1)
    if tokens > MAX_TOKENS_PER_CALL:
        raise ValueError(f"--batch {batch} at {side} px is {tokens} image tokens per network call"
                         f"{' (CFG doubles it)' if cfg != 1.0 else ''}, above the limit {MAX_TOKENS_PER_CALL}; "
                         f"lower --batch or --size")
    columns = math.ceil(math.sqrt(batch))
    width, height = columns * side * scale, math.ceil(batch / columns) * side * scale
    if width * height > MAX_SAVED_PIXELS:
        raise ValueError(f"the saved grid would be {width}x{height} pixels (limit {MAX_SAVED_PIXELS // 2**20} "
                         f"megapixels); lower --scale, --batch or --size")
    return side


def main(argv: list[str] | None = None) -> int:
    """CLI: generate `--batch` images of one prompt and save them as one image grid.

    Returns 0, or 2 with a one-line error (arguments, output path, checkpoint) before any sampling.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def run() -> None:
        writable_file(args.output, tuple(IMAGE_FORMATS))
        bundle = load_checkpoint(args.checkpoint)
        side = check_size(args.size, bundle.dit.config, args.batch, args.scale, args.cfg)
        images = generate_images(bundle, [args.prompt] * args.batch, steps=args.steps, method=args.solver,
                                 cfg=args.cfg, seed=args.seed, size=side)
        grid = image_grid(images)
        save_image_atomic(grid.resize((grid.width * args.scale, grid.height * args.scale), Image.NEAREST), args.output)
        logger.info("saved %d image(s) to %s", args.batch, args.output)

    return run_cli(parser.prog, run)


if __name__ == "__main__":
    sys.exit(main())
