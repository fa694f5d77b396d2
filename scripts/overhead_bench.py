"""Sampler overhead on a large model: the pack's `sample_flow` against ComfyUI's own samplers.

    python scripts/overhead_bench.py [--repeats 5] [--steps 6] [--latent 16]

Builds ComfyUI's SD3 MMDiT in-process with random weights (hidden 1536 = depth 24, 2 blocks,
SD3's context and pooled widths) behind ComfyUI's flow denoiser D(x, sigma) = x - sigma * net,
and times, interleaved, each pair (ours vs ComfyUI's k-diffusion sampler) on the same sigmas,
alternating which of the two runs first.
The figure is wall time per model call; a ratio of 1.00 means the sampler adds nothing
measurable to a model call. On a loaded machine that direct ratio scatters by more than the
overhead, so each sampler's own cost per model call is also measured with a near-free
denoiser (many interleaved runs) and the ratio it implies for the large model is printed
next to it. Prints a Markdown table of medians (docs/benchmarks.md).
Imports ComfyUI from $COMFYUI_PATH or the checkout's .comfyui/.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [("euler", "sample_euler"), ("heun", "sample_heun"), ("flow_2m", "sample_dpmpp_2m"),
         ("flow_2m", "sample_res_multistep"), ("flow_midpoint", "sample_dpm_2")]


def import_comfy():
    root = Path(os.environ.get("COMFYUI_PATH", ROOT / ".comfyui"))
    sys.path.insert(0, str(root))
    from comfy.cli_args import args

    args.cpu = True
    import comfy.k_diffusion.sampling
    import comfy.ldm.modules.diffusionmodules.mmdit as mmdit
    import comfy.ops

    return comfy.k_diffusion.sampling, mmdit, comfy.ops


def sd3_denoiser(mmdit, ops, latent: int):
    """ComfyUI's SD3 MMDiT, hidden 1536, 2 blocks, random weights, as D(x, sigma)."""
    torch.manual_seed(0)
    net = mmdit.MMDiT(
        patch_size=2, in_channels=16, out_channels=16, depth=24, num_blocks=2, adm_in_channels=2048,
        context_embedder_config={"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 1536}},
        pos_embed_max_size=latent // 2, num_patches=(latent // 2) ** 2, input_size=None, operations=ops.manual_cast,
    ).eval()
    for tensor in [*net.parameters(), *net.buffers()]:  # disable_weight_init leaves them uninitialised
        if tensor.is_floating_point():
            torch.nn.init.normal_(tensor, std=0.02)
    context, pooled = torch.randn(1, 77, 4096), torch.randn(1, 2048)
    calls = [0]

    @torch.no_grad()
    def denoiser(x, sigma, **extra_args):
        calls[0] += 1
        return x - sigma.reshape(-1, 1, 1, 1) * net(x, sigma * 1000, context=context, y=pooled)

    return denoiser, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--latent", type=int, default=16, help="latent side (16 channels, patch 2)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sampling, mmdit, ops = import_comfy()
    from comfyui_flowmatch.samplers import sample_flow, time_grid

    denoiser, calls = sd3_denoiser(mmdit, ops, args.latent)
    probe = denoiser(torch.randn(1, 16, args.latent, args.latent), torch.ones(1))
    if not torch.isfinite(probe).all():
        raise RuntimeError("the random-weight MMDiT gave non-finite output")
    sigmas = (1 - time_grid(args.steps)).float()
    x = torch.randn(1, 16, args.latent, args.latent, generator=torch.Generator().manual_seed(1))

    def per_call(run) -> float:
        calls[0] = 0
        start = time.perf_counter()
        run()
        return (time.perf_counter() - start) / calls[0] * 1e3

    def free_denoiser(x, sigma, **extra_args):
        calls[0] += 1
        return x * 0.5

    def own_cost_us(run) -> float:
        calls[0] = 0
        start = time.perf_counter()
        run()
        return (time.perf_counter() - start) / calls[0] * 1e6

    rows = []
    for ours, theirs in PAIRS:
        native = getattr(sampling, theirs)
        mine, native_ms = [], []
        for repeat in range(args.repeats):  # alternate which runs first: the first of a pair ran ~3 % slower
            if repeat % 2:
                native_ms.append(per_call(lambda: native(denoiser, x, sigmas, disable=True)))
            mine.append(per_call(lambda: sample_flow(denoiser, x, sigmas, method=ours)))
            if not repeat % 2:
                native_ms.append(per_call(lambda: native(denoiser, x, sigmas, disable=True)))
        ratio = statistics.median(a / b for a, b in zip(mine, native_ms))
        own, their_own = [], []
        for _ in range(20 * args.repeats):
            own.append(own_cost_us(lambda: sample_flow(free_denoiser, x, sigmas, method=ours)))
            their_own.append(own_cost_us(lambda: native(free_denoiser, x, sigmas, disable=True)))
        own_us, their_us = statistics.median(own), statistics.median(their_own)
        model_ms = statistics.median(native_ms)
        implied = (model_ms + own_us / 1e3) / (model_ms + their_us / 1e3)
        rows.append((ours, theirs, statistics.median(mine), model_ms, ratio, own_us, their_us, implied))
    print(f"| pack sampler | ComfyUI sampler | pack ms per model call | ComfyUI ms per model call | pack / ComfyUI "
          f"(median of {args.repeats}) | pack's own us per call | ComfyUI's own us per call | implied pack / ComfyUI |")
    print("|---|---|---|---|---|---|---|---|")
    for ours, theirs, a, b, ratio, own_us, their_us, implied in rows:
        print(f"| {ours} | {theirs.removeprefix('sample_')} | {a:.1f} | {b:.1f} | {ratio:.3f} | {own_us:.0f} | {their_us:.0f} "
              f"| {implied:.4f} |")


if __name__ == "__main__":
    main()
