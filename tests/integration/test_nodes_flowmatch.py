"""Our model through the pack's nodes and ComfyUI's own nodes, on the shared real server.

A tiny random-weight checkpoint in our format keeps these plumbing tests fast; the
bundled model's image quality is checked in test_nodes_adherence.py.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration

_spec = importlib.util.spec_from_file_location("node_graphs", Path(__file__).with_name("node_graphs.py"))
ng = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ng)

SIZE = 16  # the tiny model's native size (patch 4)


@pytest.fixture(scope="module")
def tiny(comfy_server, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("tiny_ckpts")
    ng.build_tiny_checkpoints(out_dir)
    return ng.install(comfy_server, out_dir / "tiny_flowmatch.safetensors")


def run_image(server, graph, save_id):
    entry = server.run_prompt(graph.prompt)
    assert entry["status"]["status_str"] == "success", ng.error_message(entry) or entry["status"]
    (image,) = ng.saved_images(server, entry, save_id)
    return image, entry


def test_loader_text_encode_sampler_vae_decode_save(comfy_server, tiny):
    g = ng.Graph()
    save = ng.text_to_image(g, tiny, "a red circle", size=SIZE, steps=4, solver="heun")
    image, entry = run_image(comfy_server, g, save)
    assert image.shape == (SIZE, SIZE, 3)
    assert np.isfinite(image).all() and image.std() > 0
    sampler_id = next(k for k, v in g.prompt.items() if v["class_type"] == "FlowMatchSampler")
    assert entry["outputs"][sampler_id]["text"] == ["heun: 7 model evaluations (NFE), 4 steps accepted, 0 rejected"]


def test_ksampler_euler_simple_matches_flowmatch_euler(comfy_server, tiny):
    images = []
    for sampler in ("KSampler", "FlowMatchSampler"):
        g = ng.Graph()
        save = ng.text_to_image(g, tiny, "a blue square", sampler=sampler, encoder="CLIPTextEncode",
                                size=SIZE, steps=6, cfg=3.0, seed=7, solver="euler")
        images.append(run_image(comfy_server, g, save)[0])
    assert np.abs(images[0] - images[1]).max() <= 1 / 255


def test_unknown_words_are_reported_under_the_node(comfy_server, tiny):
    g = ng.Graph()
    loader = g.add("FlowMatchModelLoader", ckpt_name=tiny)
    encode = g.add("FlowMatchTextEncode", clip=ng.out(loader, 1), text="a purple circle")
    zero = g.add("ConditioningZeroOut", conditioning=ng.out(encode))
    latent = g.add("FlowMatchEmptyLatent", model=ng.out(loader), width=SIZE, height=SIZE, batch_size=1)
    sampled = g.add("FlowMatchSampler", model=ng.out(loader), seed=0, steps=1, cfg=1.0, solver="euler",
                    schedule="uniform", shift=3.0, positive=ng.out(encode), negative=ng.out(zero),
                    latent_image=ng.out(latent), denoise=1.0)
    g.add("SaveImage", images=ng.out(g.add("VAEDecode", samples=ng.out(sampled), vae=ng.out(loader, 2))),
          filename_prefix="words")
    entry = comfy_server.run_prompt(g.prompt)
    assert entry["status"]["status_str"] == "success", ng.error_message(entry)
    (text,) = entry["outputs"][encode]["text"]
    assert "purple" in text, text


def test_native_conditioning_nodes_keep_working(comfy_server, tiny):
    g = ng.Graph()
    loader = g.add("FlowMatchModelLoader", ckpt_name=tiny)
    red = g.add("FlowMatchTextEncode", clip=ng.out(loader, 1), text="a red circle")
    blue = g.add("CLIPTextEncode", clip=ng.out(loader, 1), text="a blue square")
    late = g.add("ConditioningSetTimestepRange", conditioning=ng.out(blue), start=0.5, end=1.0)
    both = g.add("ConditioningCombine", conditioning_1=ng.out(red), conditioning_2=ng.out(late))
    zero = g.add("ConditioningZeroOut", conditioning=ng.out(red))
    latent = g.add("FlowMatchEmptyLatent", model=ng.out(loader), width=SIZE, height=SIZE, batch_size=2)
    sampled = g.add("FlowMatchSampler", model=ng.out(loader), seed=1, steps=3, cfg=2.0, solver="midpoint",
                    schedule="sd3 shift", shift=3.0, positive=ng.out(both), negative=ng.out(zero),
                    latent_image=ng.out(latent), denoise=1.0)
    save = g.add("SaveImage", images=ng.out(g.add("VAEDecode", samples=ng.out(sampled), vae=ng.out(loader, 2))),
                 filename_prefix="conds")
    entry = comfy_server.run_prompt(g.prompt)
    assert entry["status"]["status_str"] == "success", ng.error_message(entry)
    assert len(ng.saved_images(comfy_server, entry, save)) == 2


@pytest.mark.parametrize("patch_node, inputs", [
    ("ModelSamplingSD3", {"shift": 3.0}),
    ("ModelSamplingAuraFlow", {"shift": 3.0}),
])
def test_shift_nodes_apply_to_our_model(comfy_server, tiny, patch_node, inputs):
    def run(with_patch):
        g = ng.Graph()
        patch = (lambda g, model: ng.out(g.add(patch_node, model=model, **inputs))) if with_patch else None
        save = ng.text_to_image(g, tiny, "a red circle", size=SIZE, steps=4, seed=3, model_patch=patch)
        return run_image(comfy_server, g, save)[0]

    plain, shifted = run(False), run(True)
    assert np.isfinite(shifted).all()
    assert np.abs(plain - shifted).max() > 2 / 255, "the shift node did not change the sampling"


def test_vae_encode_decode_round_trip_is_pixel_exact(comfy_server, tiny):
    g = ng.Graph()
    loader = g.add("FlowMatchModelLoader", ckpt_name=tiny)
    image = g.add("EmptyImage", width=SIZE, height=SIZE, batch_size=1, color=0x3366CC)
    encoded = g.add("VAEEncode", pixels=ng.out(image), vae=ng.out(loader, 2))
    save = g.add("SaveImage", images=ng.out(g.add("VAEDecode", samples=ng.out(encoded), vae=ng.out(loader, 2))),
                 filename_prefix="roundtrip")
    result, _ = run_image(comfy_server, g, save)
    expected = np.array([0x33, 0x66, 0xCC]) / 255.0
    assert np.abs(result - expected).max() <= 1 / 255 + 1e-9  # SaveImage truncates to uint8


def test_img2img_denoise_keeps_the_input(comfy_server, tiny):
    g = ng.Graph()
    loader = g.add("FlowMatchModelLoader", ckpt_name=tiny)
    image = g.add("EmptyImage", width=SIZE, height=SIZE, batch_size=1, color=0xFF0000)
    encoded = g.add("VAEEncode", pixels=ng.out(image), vae=ng.out(loader, 2))
    pos = g.add("FlowMatchTextEncode", clip=ng.out(loader, 1), text="a red circle")
    sampled = g.add("FlowMatchSampler", model=ng.out(loader), seed=0, steps=2, cfg=1.0, solver="euler",
                    schedule="model default", shift=3.0, positive=ng.out(pos), negative=ng.out(pos),
                    latent_image=ng.out(encoded), denoise=0.1)
    save = g.add("SaveImage", images=ng.out(g.add("VAEDecode", samples=ng.out(sampled), vae=ng.out(loader, 2))),
                 filename_prefix="img2img")
    result, _ = run_image(comfy_server, g, save)
    assert result[..., 0].mean() > 0.7 and result[..., 2].mean() < 0.3


def test_noise_mask_keeps_the_masked_out_pixels(comfy_server, tiny):
    g = ng.Graph()
    loader = g.add("FlowMatchModelLoader", ckpt_name=tiny)
    image = g.add("EmptyImage", width=SIZE, height=SIZE, batch_size=1, color=0x00FF00)
    encoded = g.add("VAEEncode", pixels=ng.out(image), vae=ng.out(loader, 2))
    mask = g.add("SolidMask", value=0.0, width=SIZE, height=SIZE)
    masked = g.add("SetLatentNoiseMask", samples=ng.out(encoded), mask=ng.out(mask))
    pos = g.add("FlowMatchTextEncode", clip=ng.out(loader, 1), text="a red circle")
    sampled = g.add("FlowMatchSampler", model=ng.out(loader), seed=0, steps=3, cfg=2.0, solver="heun",
                    schedule="model default", shift=3.0, positive=ng.out(pos), negative=ng.out(pos),
                    latent_image=ng.out(masked), denoise=1.0)
    save = g.add("SaveImage", images=ng.out(g.add("VAEDecode", samples=ng.out(sampled), vae=ng.out(loader, 2))),
                 filename_prefix="masked")
    result, _ = run_image(comfy_server, g, save)
    assert np.abs(result - np.array([0.0, 1.0, 0.0])).max() <= 1 / 255 + 1e-9
