"""Build tiny random-weight checkpoints for the node tests (run as a script, not collected).

    python build_tiny_checkpoints.py OUT_DIR [--flowmatch-only]

writes into OUT_DIR:
- tiny_flowmatch.safetensors: our format (models.checkpoint), a few thousand parameters;
- tiny_sd3.safetensors: a diffusion-only SD3 MMDiT (depth 2, hidden 128, real SD3 key
  layout and widths: 16 latent channels, context 4096, pooled 2048), ~2.4 M parameters;
- tiny_wan21.safetensors: a diffusion-only Wan 2.1 t2v DiT (dim 128, one block);
- tiny_sd3_f8_e4m3.safetensors, tiny_sd3_f8_e5m2.safetensors: the same SD3 weights stored
  as float8 (safetensors dtypes F8_E4M3 / F8_E5M2), as the usual fp8 Flux/SD3.5 downloads are;
- tiny_pixart_eps.safetensors: a one-block PixArt Sigma (eps prediction, not flow; its
  width is fixed at 1152 by ComfyUI's detection, ~30 M parameters stored as fp16, zeros);
and reports what ComfyUI's own detection (`comfy.sd.load_diffusion_model`) makes of each
(the tests check SD3 with shift 3.0, Wan 2.1, and an EPS PixArt). The native networks are built with ComfyUI's classes; ComfyUI
is imported from $COMFYUI_PATH (default: the repo's .comfyui) with `args.cpu = True`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
COMFYUI = Path(os.environ.get("COMFYUI_PATH") or REPO_ROOT / ".comfyui")
CAPTIONS = ["a red circle", "a blue square", "a green triangle on the left", ""]


def randomize(module: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    """Deterministic small random weights for every parameter (ComfyUI layers skip init)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)


def build_flowmatch(path: Path) -> None:
    from comfyui_flowmatch.models.checkpoint import save_checkpoint
    from comfyui_flowmatch.models.dit import DiTConfig, FlowDiT
    from comfyui_flowmatch.models.text import TextConfig, TextEncoder, Tokenizer

    tokenizer = Tokenizer.from_captions(CAPTIONS, max_length=8)
    dit = FlowDiT(DiTConfig(image_size=16, patch=4, width=32, depth=1, heads=2, text_dim=32, conv_channels=8))
    text = TextEncoder(TextConfig(vocab_size=len(tokenizer.vocab), dim=32, depth=1, heads=2, max_length=8))
    randomize(dit, 1, 0.2)
    randomize(text, 2, 0.2)
    save_checkpoint(path, dit, text, tokenizer, training={"note": "random weights for tests"}, dtype=torch.float32)


def build_native(out_dir: Path) -> dict:
    sys.path.insert(0, str(COMFYUI))
    from comfy.cli_args import args

    args.cpu = True
    import comfy.ldm.modules.diffusionmodules.mmdit as mmdit
    import comfy.ldm.pixart.pixartms as pixart
    import comfy.ldm.wan.model as wan
    import comfy.ops
    import comfy.sd
    from safetensors.torch import save_file

    ops = comfy.ops.disable_weight_init
    sd3 = mmdit.MMDiT(
        patch_size=2, in_channels=16, out_channels=16, depth=2, adm_in_channels=2048,
        context_embedder_config={"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": 128}},
        pos_embed_max_size=16, num_patches=256, input_size=None, operations=ops,
    )
    wan21 = wan.WanModel(model_type="t2v", dim=128, ffn_dim=256, num_heads=1, num_layers=1, operations=ops)
    eps = pixart.PixArtMS(depth=1, input_size=32, micro_condition=False, operations=ops)
    report = {}
    fp8 = (("tiny_sd3_f8_e4m3", sd3, torch.float8_e4m3fn), ("tiny_sd3_f8_e5m2", sd3, torch.float8_e5m2))
    for name, network, seed in (("tiny_sd3", sd3, 3), *fp8, ("tiny_wan21", wan21, 4), ("tiny_pixart_eps", eps, None)):
        if seed is None:
            tensors = {k: torch.zeros(v.shape, dtype=torch.float16) for k, v in network.state_dict().items()}
        elif isinstance(seed, torch.dtype):  # already randomized: the same weights, stored as float8
            tensors = {k: v.to(seed).contiguous() for k, v in network.state_dict().items()}
        else:
            randomize(network, seed)
            tensors = {k: v.contiguous() for k, v in network.state_dict().items()}
        path = out_dir / f"{name}.safetensors"
        save_file(tensors, str(path))
        patcher = comfy.sd.load_diffusion_model(str(path))
        sampling = patcher.get_model_object("model_sampling")
        report[name] = {
            "model": type(patcher.model).__name__,
            "model_type": patcher.model.model_type.name,
            "shift": getattr(sampling, "shift", None),
            "parameters": sum(p.numel() for p in network.parameters()),
        }
    return report


def main(out_dir: str, flowmatch_only: bool) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    build_flowmatch(out / "tiny_flowmatch.safetensors")
    if flowmatch_only:
        print(json.dumps({}))
        return
    os.chdir(COMFYUI)
    print(json.dumps(build_native(out)))


if __name__ == "__main__":
    main(sys.argv[1], "--flowmatch-only" in sys.argv[2:])
