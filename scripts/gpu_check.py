"""Device check: the bundled model on CUDA in bf16, pure torch and through the ComfyUI nodes.

    python scripts/gpu_check.py [--checkpoint PATH] [--comfyui PATH] [--min-adherent 14]

One short run (well under 5 minutes on a bare GPU machine with torch + safetensors +
numpy + pillow; nothing is downloaded). It prints one JSON report and exits non-zero
when a check fails:

1. pure: `models.checkpoint` + `samplers.integrate` in bf16 on the GPU, 16 evaluation
   prompts (CFG 4, euler, 20 steps): finite output, adherent images (models.evaluate.judge),
   timings.
2. comfyui (only when a ComfyUI tree and its requirements are importable: $COMFYUI_PATH, else
   the repo's `.comfyui` after `make setup`; otherwise reported as skipped): ComfyUI in process with
   `--bf16-unet`, our loader / text encoder / FlowMatchSampler / pixel VAE, the dtype model
   management chose, adherence, agreement with the pure path (same seeds and grid), and
   KSampler(euler, simple) parity on the same seed.

Without CUDA it falls back to the CPU in fp32 (CI and development machines), so the script
itself stays tested.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import warnings
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "comfyui_flowmatch"
DEFAULT_CHECKPOINT = REPO_ROOT / "models" / "weights" / "flowmatch_shapes.safetensors"


def import_pack():
    """The repo as the package `comfyui_flowmatch` (works without installing it)."""
    if PACKAGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            PACKAGE, REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = module
        spec.loader.exec_module(module)
    return sys.modules[PACKAGE]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def adherence(images: torch.Tensor, prompts: list[str]) -> int:
    """How many images [B, 3, H, W] in [0, 1] pass models.evaluate.judge for their prompt."""
    from comfyui_flowmatch.models.evaluate import judge

    return sum(judge(image.float().cpu(), prompt)["all"] for image, prompt in zip(images, prompts))


def pure_check(checkpoint: Path, device: torch.device, dtype: torch.dtype, prompts: list[str], steps: int,
               cfg: float) -> tuple[torch.Tensor, dict]:
    """The network and solver without ComfyUI, in `dtype` on `device`."""
    from comfyui_flowmatch.models.checkpoint import load_checkpoint
    from comfyui_flowmatch.models.generate import initial_noise
    from comfyui_flowmatch.models.text import encode_prompts
    from comfyui_flowmatch.samplers import integrate

    started = time.perf_counter()
    bundle = load_checkpoint(checkpoint, device)
    dit, encoder = bundle.dit.to(dtype), bundle.text_encoder.to(dtype)
    synchronize(device)
    load_s = time.perf_counter() - started

    with torch.inference_mode():
        context, pooled = encode_prompts(bundle.tokenizer, encoder, prompts + [""] * len(prompts))

        def velocity(x, t):
            v_c, v_u = dit(torch.cat([x, x]), torch.cat([t, t]), context, pooled).chunk(2)
            return v_u + cfg * (v_c - v_u)

        side = dit.config.image_size
        noise = initial_noise(len(prompts), dit.config.channels, side, side, seed=0).to(device, dtype)
        started = time.perf_counter()
        solution = integrate(velocity, noise, torch.linspace(0.0, 1.0, steps + 1), "euler")
        x = solution.state
        synchronize(device)
        sample_s = time.perf_counter() - started
    images = ((x.float() + 1) / 2).clamp(0, 1).cpu()
    return images, {
        "dtype": str(next(dit.parameters()).dtype),
        "finite": bool(torch.isfinite(x).all()),
        "adherent": adherence(images, prompts),
        "nfe": solution.nfe,
        "load_s": round(load_s, 3),
        "sample_s": round(sample_s, 3),
    }


def start_comfyui(comfyui: Path, cuda: bool):
    """ComfyUI in process, set up as main.py would for `--cpu` or `--bf16-unet`."""
    sys.path.insert(0, str(comfyui))
    from comfy.cli_args import args

    args.cpu = not cuda
    args.bf16_unet = cuda
    # As main.py does: the `utils` package first, before comfy/ lands on sys.path and its
    # utils.py would shadow it (the pack's samplers import `server`, which needs the package).
    import utils.install_util  # noqa: F401
    import nodes  # noqa: F401  (ComfyUI's nodes.py: puts comfy/ on sys.path as the server does)


def comfyui_check(checkpoint: Path, comfyui: Path, cuda: bool, prompts: list[str], steps: int, cfg: float,
                  side: int) -> tuple[torch.Tensor | None, dict]:
    """Our nodes' functions through ComfyUI's model management, guider and VAE."""
    try:
        start_comfyui(comfyui, cuda)
        import folder_paths

        from comfyui_flowmatch.nodes.model_files import FOLDER_NAME, register_folder
    except ImportError as error:
        return None, {"skipped": f"ComfyUI not importable from {comfyui}: {error}"}

    register_folder()
    folder_paths.add_model_folder_path(FOLDER_NAME, str(checkpoint.parent))
    with torch.inference_mode():  # as ComfyUI's executor runs every node
        return comfyui_samples(checkpoint, prompts, steps, cfg, side)


def comfyui_samples(checkpoint: Path, prompts: list[str], steps: int, cfg: float,
                    side: int) -> tuple[torch.Tensor, dict]:
    import comfy.sample

    from comfyui_flowmatch.nodes.conditioning import encode_text
    from comfyui_flowmatch.nodes.loader import load_any
    from comfyui_flowmatch.nodes.sampling import run_sampler

    started = time.perf_counter()
    model, clip, vae = load_any(checkpoint.name)
    load_s = time.perf_counter() - started
    negative = encode_text(clip, "")
    latent = {"samples": torch.zeros(1, 3, side, side)}
    images, finite, nfe = [], True, 0
    started = time.perf_counter()
    for seed, prompt in enumerate(prompts):
        positive = encode_text(clip, prompt)
        out, counts = run_sampler(model, seed, steps, cfg, "euler", "uniform", 3.0, positive, negative, latent, 1.0)
        finite &= bool(torch.isfinite(out["samples"]).all())
        nfe += counts["nfe"]
        images.append(vae.decode(out["samples"])[0].movedim(-1, 0).float().cpu())
    sample_s = time.perf_counter() - started

    positive = encode_text(clip, prompts[0])
    noise = comfy.sample.prepare_noise(latent["samples"], 0)
    ksampler = comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", positive, negative, latent["samples"])
    ours, _ = run_sampler(model, 0, steps, cfg, "euler", "model default", 3.0, positive, negative, latent, 1.0)
    return torch.stack(images), {
        "device": str(model.load_device),
        "dtype": str(model.model.get_dtype()),
        "finite": finite,
        "adherent": adherence(torch.stack(images), prompts),
        "nfe": nfe,
        "ksampler_max_abs_diff": float((ksampler - ours["samples"]).abs().max()),
        "load_s": round(load_s, 3),
        "sample_s": round(sample_s, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--comfyui", type=Path, default=Path(os.environ.get("COMFYUI_PATH") or REPO_ROOT / ".comfyui"),
                        help="ComfyUI tree (default: $COMFYUI_PATH, else the repo's .comfyui)")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=4.0)
    parser.add_argument("--min-adherent", type=int, default=14, help="images (of --prompts) that must pass the judge")
    options = parser.parse_args(argv)

    warnings.filterwarnings("ignore", message="prompt .*")  # vocabulary notes from models.text
    import_pack()
    from comfyui_flowmatch.models.evaluate import evaluation_prompts

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    prompts = evaluation_prompts("seen", options.prompts)
    pure_images, pure = pure_check(options.checkpoint, device, dtype, prompts, options.steps, options.cfg)
    comfy_images, comfy = comfyui_check(options.checkpoint, options.comfyui, cuda, prompts, options.steps, options.cfg,
                                        side=pure_images.shape[-1])
    report = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if cuda else "cpu (no CUDA: fp32 fallback)",
        "checkpoint": str(options.checkpoint),
        "pure": pure,
        "comfyui": comfy,
    }
    if comfy_images is not None:
        # Same seeds (sample i: seed i), the same uniform grid, same CFG: the wrapper must
        # reproduce the pure path, which checks the sigma/velocity conventions end to end.
        report["pure_vs_comfyui_max_abs_diff"] = float((pure_images - comfy_images).abs().max())
    failures = []
    for stage in ("pure", "comfyui"):
        result = report[stage]
        if "skipped" in result:
            continue
        if not result["finite"]:
            failures.append(f"{stage}: non-finite samples")
        if result["adherent"] < options.min_adherent:
            failures.append(f"{stage}: {result['adherent']}/{options.prompts} adherent < {options.min_adherent}")
    # bf16 on the GPU rounds differently in differently batched calls; fp32 agrees to round-off.
    bf16 = dtype == torch.bfloat16
    tolerances = {"ksampler_max_abs_diff": 0.05 if bf16 else 1e-4, "pure_vs_comfyui_max_abs_diff": 0.1 if bf16 else 1e-3}
    for key, tolerance in tolerances.items():
        value = report["comfyui"].get(key, report.get(key))
        if value is not None and value > tolerance:
            failures.append(f"{key} {value:.3g} > {tolerance}")
    report["failures"] = failures
    print(json.dumps(report, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
