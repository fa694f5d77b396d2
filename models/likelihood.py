"""Bits per dimension of images under a checkpoint (``python -m comfyui_flowmatch.models.likelihood``).

The exact log-likelihood of `samplers.likelihood` (instantaneous change of variables) under
the flow of the prompt's velocity at CFG 1 (default: the empty prompt, i.e. the model's
unconditional image density). Images are 8-bit RGB at the model's size; bits/dim is
-log2 of the probability of the 8-bit values (see `samplers.likelihood.bits_per_dim`).

``--benchmark N`` scores three sets of N images: the training distribution (procedural
shapes), off-palette shapes (same layouts, random colours outside the palette) and uniform
noise; a density model of the training data should rank them in that order.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..samplers.likelihood import LogLikelihood, bits_per_dim, log_likelihood
from .checkpoint import FlowMatchBundle, load_checkpoint
from .data import ShapesDataset
from .generate import DEFAULT_CHECKPOINT, guided_velocity

logger = logging.getLogger(__name__)


def image_log_likelihood(bundle: FlowMatchBundle, images: torch.Tensor, prompts: list[str], *, steps: int = 32,
                         method: str = "midpoint", divergence: str = "hutchinson", probes: int = 4,
                         seed: int = 0) -> LogLikelihood:
    """log p of images [B, 3, H, W] in [0, 1] under the flow of `prompts` at CFG 1 (model space)."""
    copies = probes if divergence == "hutchinson" else 1
    with torch.no_grad():
        velocity = guided_velocity(bundle, list(prompts) * copies, cfg=1.0)
    device = next(bundle.dit.parameters()).device
    return log_likelihood(velocity, (images * 2 - 1).to(device), steps=steps, method=method, divergence=divergence,
                          probes=probes, generator=torch.Generator().manual_seed(seed))


def benchmark_sets(n: int, size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Three sets of `n` 8-bit images in [0, 1]: training distribution, off-palette recolourings, noise."""
    shapes, _ = ShapesDataset(seed=seed + 99, size=size).batch(0, n)
    rng = np.random.default_rng(seed)
    off = []
    for image in shapes:
        background = image[:, 0, 0][:, None, None]
        is_shape = (image - background).abs().sum(0, keepdim=True) > 1e-6
        fg, bg = (torch.from_numpy(rng.integers(0, 256, 3) / 255).float()[:, None, None] for _ in range(2))
        off.append(torch.where(is_shape, fg, bg))
    noise = torch.from_numpy(rng.integers(0, 256, (n, 3, size, size)) / 255).float()
    quantise = lambda x: (x * 255).round() / 255  # noqa: E731
    return {"training distribution": quantise(shapes), "off-palette": quantise(torch.stack(off)), "noise": noise}


def load_images(paths: list[str], size: int) -> torch.Tensor:
    images = []
    for path in paths:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                raise SystemExit(f"{path}: image is {im.size[0]}x{im.size[1]}, the model needs {size}x{size}")
            images.append(torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1))
    return torch.stack(images)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m comfyui_flowmatch.models.likelihood", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="*", help="PNG files at the model's size")
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--prompt", default="", help='condition on this prompt ("" = unconditional)')
    parser.add_argument("--benchmark", type=int, default=0, help="score N images of each benchmark set")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--method", default="midpoint")
    parser.add_argument("--divergence", choices=("exact", "hutchinson"), default="hutchinson")
    parser.add_argument("--probes", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.images and not args.benchmark:
        raise SystemExit("give image files or --benchmark N")
    bundle = load_checkpoint(args.checkpoint)
    size = bundle.dit.config.image_size
    sets = benchmark_sets(args.benchmark, size, args.seed) if args.benchmark else {"images": load_images(args.images, size)}
    options = dict(steps=args.steps, method=args.method, divergence=args.divergence, probes=args.probes, seed=args.seed)
    for name, images in sets.items():
        result = image_log_likelihood(bundle, images, [args.prompt] * len(images), **options)
        bpd = bits_per_dim(result.log_p, result.dims)
        error = result.std_error / (result.dims * np.log(2))
        for i, (b, e) in enumerate(zip(bpd.tolist(), error.tolist())):
            label = args.images[i] if name == "images" else f"{name} #{i}"
            print(f"{label}: {b:.3f} ± {e:.3f} bits/dim")
        if name != "images":
            print(f"== {name}: median {bpd.median().item():.3f} bits/dim over {len(images)} images")


if __name__ == "__main__":
    main()
