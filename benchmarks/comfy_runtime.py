"""ComfyUI in-process for the benchmarks: the import path, the bundled model as
FlowMatchModelLoader wraps it, batched prompts, and one sampling run with counted NFE.

`import_comfyui()` puts the ComfyUI tree on `sys.path` (the repo's `.comfyui`, or
$COMFYUI_PATH) and drops entries that would make this pack's own `nodes/` shadow
ComfyUI's top-level `nodes` (running `python -m` from the repo root puts it there).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

PACK_ROOT = Path(__file__).resolve().parents[1]


def import_comfyui(path: str | os.PathLike | None = None) -> Path:
    """Make ComfyUI importable in this process (CPU unless CUDA is present); returns its root."""
    root = Path(path or os.environ.get("COMFYUI_PATH") or PACK_ROOT / ".comfyui").resolve()
    if not (root / "comfy" / "samplers.py").is_file():
        raise SystemExit(f"no ComfyUI tree at {root}: run `make setup` or set COMFYUI_PATH")
    sys.path[:] = [p for p in sys.path if Path(p or os.getcwd()).resolve() != PACK_ROOT]
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from comfy.cli_args import args

    args.cpu = args.cpu or not torch.cuda.is_available()
    # ComfyUI's main.py imports its `utils` package first; some comfy module later puts comfy/ on
    # sys.path, after which `import utils` would find comfy/utils.py instead (server.py needs the package).
    import utils.install_util  # noqa: F401
    return root


@dataclass
class Bundled:
    """The bundled checkpoint loaded through FlowMatchModelLoader's own code."""

    model: object  # comfy ModelPatcher
    clip: object  # comfy.sd.CLIP
    path: Path


def load_bundled(path: str | os.PathLike | None = None) -> Bundled:
    from ..models.generate import DEFAULT_CHECKPOINT
    from ..nodes.loader import load_ours

    path = Path(path or DEFAULT_CHECKPOINT)
    model, clip, _ = load_ours(str(path))
    return Bundled(model, clip, path)


def batched_conditioning(clip, prompts: list[str]) -> list:
    """One CONDITIONING entry holding all `prompts` as a batch (our CLIP's tokens are the texts)."""
    from ..nodes.text_clip import TOKENS_KEY

    return clip.encode_from_tokens_scheduled({TOKENS_KEY: list(prompts)})


def shifted(model, shift: float | None):
    """`model` behind ComfyUI's ModelSamplingSD3 node (None: as loaded)."""
    if shift is None:
        return model
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3

    return ModelSamplingSD3().patch(model, shift)[0]


def guidance_limited(model, sigma_low: float, sigma_high: float):
    """`model` behind FlowMatchGuidanceInterval (CFG only for sigma in [sigma_low, sigma_high])."""
    from ..nodes.guidance_interval import FlowMatchGuidanceInterval

    return FlowMatchGuidanceInterval.execute(model, sigma_high, sigma_low)[0]


class CountingDenoiser:
    """ComfyUI's sampler-side denoiser with its calls counted; attributes fall through
    (k-diffusion samplers read `inner_model`)."""

    def __init__(self, denoiser):
        self.denoiser = denoiser
        self.nfe = 0

    def __call__(self, *args, **kwargs):
        self.nfe += 1
        return self.denoiser(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.denoiser, name)


def counted(sampler):
    """A copy of a ComfyUI KSAMPLER whose model calls are counted: (sampler, counter dict)."""
    import comfy.samplers

    counter = {"nfe": 0}
    inner = sampler.sampler_function

    def sample(model, x, sigmas, *args, **kwargs):
        denoiser = CountingDenoiser(model)
        try:
            return inner(denoiser, x, sigmas, *args, **kwargs)
        finally:
            counter["nfe"] += denoiser.nfe

    return comfy.samplers.KSAMPLER(sample, sampler.extra_options, sampler.inpaint_options), counter


@torch.inference_mode()
def sample(model, sampler, sigmas: torch.Tensor, positive, negative, noise: torch.Tensor, cfg: float) -> tuple[torch.Tensor, int]:
    """ComfyUI's SamplerCustom path (its noise scaling, CFG guider) from `noise` to a latent; (latent, NFE)."""
    import comfy.sample

    sampler, counter = counted(sampler)
    latent = torch.zeros_like(noise)
    out = comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, positive, negative, latent, disable_pbar=True, seed=0)
    return out.float(), counter["nfe"]
