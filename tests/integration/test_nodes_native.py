"""Native flow models (SD3, Wan 2.1, Flux), the non-flow refusal and NaN fault injection,
on a real server that also loads the test-only nodes in extra_custom_nodes/.

Tiny random-weight checkpoints are built with ComfyUI's own model classes in the real key
layouts (build_tiny_checkpoints.py); native text encoders are multi-GB, so conditioning
comes from FMTestConditioning (random tensors of the native widths).
"""

import importlib.util
from pathlib import Path

import pytest
import torch

from comfyui_flowmatch.samplers import METHODS

pytestmark = pytest.mark.integration

_spec = importlib.util.spec_from_file_location("node_graphs", Path(__file__).with_name("node_graphs.py"))
ng = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ng)

SD3_COND = dict(width=4096, length=8, pooled_width=2048)
FLUX_COND = dict(width=4096, length=8, pooled_width=768)
WAN_COND = dict(width=4096, length=8, pooled_width=0)


def conds(g, spec, seeds=(1, 2)):
    return [ng.out(g.add("FMTestConditioning", seed=seed, **spec)) for seed in seeds]


def sample_native(server, g, save):
    entry = server.run_prompt(g.prompt)
    assert entry["status"]["status_str"] == "success", ng.error_message(entry)
    return ng.saved_latent(server, entry, save)


def custom_advanced(g, model, positive, negative, latent, sampler, sigmas, cfg, seed):
    guider = g.add("CFGGuider", model=model, positive=positive, negative=negative, cfg=cfg)
    noise = g.add("RandomNoise", noise_seed=seed)
    sampled = g.add("SamplerCustomAdvanced", noise=ng.out(noise), guider=ng.out(guider), sampler=sampler,
                    sigmas=sigmas, latent_image=latent)
    return g.add("SaveLatent", samples=ng.out(sampled), filename_prefix="native")


def test_tiny_checkpoints_are_detected_as_their_native_types(native):
    _, report = native
    assert report["tiny_sd3"]["model"] == "SD3" and report["tiny_sd3"]["shift"] == 3.0
    assert report["tiny_sd3"]["model_type"] == "FLOW"
    assert report["tiny_wan21"]["model"] == "WAN21" and report["tiny_wan21"]["model_type"] == "FLOW"
    assert report["tiny_pixart_eps"]["model_type"] == "EPS"


def test_sd3_our_euler_equals_sampler_custom_advanced_euler(native):
    server, _ = native
    steps, cfg, seed = 4, 2.5, 11

    g = ng.Graph()
    model = ng.out(g.add("FlowMatchModelLoader", ckpt_name="tiny_sd3.safetensors"))
    pos, neg = conds(g, SD3_COND)
    latent = ng.out(g.add("FlowMatchEmptyLatent", model=model, width=64, height=64, batch_size=1))
    sampled = g.add("FlowMatchSampler", model=model, seed=seed, steps=steps, cfg=cfg, solver="euler",
                    schedule="model default", shift=3.0, positive=pos, negative=neg, latent_image=latent, denoise=1.0)
    ours = sample_native(server, g, g.add("SaveLatent", samples=ng.out(sampled), filename_prefix="ours"))

    g = ng.Graph()
    model = ng.out(g.add("UNETLoader", unet_name="tiny_sd3.safetensors", weight_dtype="default"))
    pos, neg = conds(g, SD3_COND)
    latent = ng.out(g.add("EmptySD3LatentImage", width=64, height=64, batch_size=1))
    sigmas = ng.out(g.add("BasicScheduler", model=model, scheduler="simple", steps=steps, denoise=1.0))
    sampler = ng.out(g.add("KSamplerSelect", sampler_name="euler"))
    native_latent = sample_native(server, g, custom_advanced(g, model, pos, neg, latent, sampler, sigmas, cfg, seed))

    assert ours.shape == native_latent.shape == (1, 16, 8, 8)
    torch.testing.assert_close(ours, native_latent, atol=1e-5, rtol=1e-5)


def test_sd3_our_sampler_and_scheduler_inside_sampler_custom_advanced(native):
    server, _ = native
    g = ng.Graph()
    model = ng.out(g.add("UNETLoader", unet_name="tiny_sd3.safetensors", weight_dtype="default"))
    pos, neg = conds(g, SD3_COND)
    latent = ng.out(g.add("EmptySD3LatentImage", width=64, height=64, batch_size=1))
    sigmas = ng.out(g.add("FlowMatchScheduler", model=model, schedule="sd3 shift", steps=3, shift=3.0, denoise=1.0,
                          width=64, height=64))
    sampler = ng.out(g.add("FlowMatchODESampler", solver="rk4"))
    result = sample_native(server, g, custom_advanced(g, model, pos, neg, latent, sampler, sigmas, 2.0, 5))
    assert torch.isfinite(result).all() and result.std() > 0


@pytest.mark.parametrize("solver", list(METHODS))
def test_wan21_video_latent_samples_with_every_solver(native, solver):
    server, _ = native
    g = ng.Graph()
    model = ng.out(g.add("FlowMatchModelLoader", ckpt_name="tiny_wan21.safetensors"))
    pos, neg = conds(g, WAN_COND)
    latent = ng.out(g.add("FlowMatchEmptyLatent", model=model, width=32, height=32, batch_size=1, length=5))
    sampled = g.add("FlowMatchSampler", model=model, seed=0, steps=2, cfg=2.0, solver=solver,
                    schedule="model default", shift=3.0, positive=pos, negative=neg, latent_image=latent, denoise=1.0)
    result = sample_native(server, g, g.add("SaveLatent", samples=ng.out(sampled), filename_prefix=f"wan_{solver}"))
    assert result.shape == (1, 16, 2, 4, 4)
    assert torch.isfinite(result).all()


def test_small_flux_built_in_process_matches_comfy_euler_on_resolution_shift(native):
    server, _ = native
    results = []
    for sampler_node in ("FlowMatchODESampler", "KSamplerSelect"):
        g = ng.Graph()
        model = ng.out(g.add("FMTestTinyFlux", seed=0))
        pos, neg = conds(g, FLUX_COND)
        latent = ng.out(g.add("FlowMatchEmptyLatent", model=model, width=64, height=64, batch_size=1))
        sigmas = ng.out(g.add("FlowMatchScheduler", model=model, schedule="flux resolution shift", steps=3,
                              shift=3.0, denoise=1.0, width=64, height=64))
        inputs = {"solver": "euler"} if sampler_node == "FlowMatchODESampler" else {"sampler_name": "euler"}
        sampler = ng.out(g.add(sampler_node, **inputs))
        results.append(sample_native(server, g, custom_advanced(g, model, pos, neg, latent, sampler, sigmas, 1.0, 3)))
    assert results[0].shape == (1, 16, 8, 8)
    torch.testing.assert_close(results[0], results[1], atol=1e-5, rtol=1e-5)


def test_flux_model_default_schedule_uses_model_sampling_flux(native):
    server, _ = native
    g = ng.Graph()
    model = ng.out(g.add("FMTestTinyFlux", seed=0))
    shifted = ng.out(g.add("ModelSamplingFlux", model=model, max_shift=1.15, base_shift=0.5, width=64, height=64))
    pos, neg = conds(g, FLUX_COND)
    latent = ng.out(g.add("FlowMatchEmptyLatent", model=shifted, width=64, height=64, batch_size=1))
    sampled = g.add("FlowMatchSampler", model=shifted, seed=0, steps=2, cfg=1.0, solver="heun",
                    schedule="model default", shift=3.0, positive=pos, negative=neg, latent_image=latent, denoise=1.0)
    result = sample_native(server, g, g.add("SaveLatent", samples=ng.out(sampled), filename_prefix="flux"))
    assert torch.isfinite(result).all()


def test_eps_model_is_refused_naming_its_type(native):
    server, _ = native
    g = ng.Graph()
    loader = g.add("FlowMatchModelLoader", ckpt_name="tiny_pixart_eps.safetensors")
    g.add("SaveLatent", samples=ng.out(g.add("FlowMatchEmptyLatent", model=ng.out(loader), width=16, height=16,
                                             batch_size=1)), filename_prefix="eps")
    entry = server.run_prompt(g.prompt)
    assert entry["status"]["status_str"] == "error"
    message = ng.error_message(entry)
    assert "tiny_pixart_eps.safetensors" in message and "PixArt" in message and "EPS" in message, message
    assert "KSampler" in message, message


@pytest.mark.parametrize("path", ["FlowMatchSampler", "SamplerCustomAdvanced"])
def test_nan_at_step_k_stops_with_our_message_and_saves_nothing(native, path):
    server, _ = native
    steps, bad_step = 5, 3
    g = ng.Graph()
    loader = g.add("FlowMatchModelLoader", ckpt_name="tiny_flowmatch.safetensors")
    model = ng.out(g.add("FMTestNaNAtStep", model=ng.out(loader), step=bad_step))
    pos = ng.out(g.add("FlowMatchTextEncode", clip=ng.out(loader, 1), text="a red circle"))
    neg = ng.out(g.add("FlowMatchTextEncode", clip=ng.out(loader, 1), text=""))
    latent = ng.out(g.add("FlowMatchEmptyLatent", model=model, width=16, height=16, batch_size=1))
    if path == "FlowMatchSampler":
        sampled = ng.out(g.add("FlowMatchSampler", model=model, seed=0, steps=steps, cfg=2.0, solver="euler",
                               schedule="model default", shift=3.0, positive=pos, negative=neg,
                               latent_image=latent, denoise=1.0))
        node = "FlowMatchSampler"
    else:
        sigmas = ng.out(g.add("FlowMatchScheduler", model=model, schedule="uniform", steps=steps, shift=3.0,
                              denoise=1.0, width=16, height=16))
        sampler = ng.out(g.add("FlowMatchODESampler", solver="euler"))
        guider = g.add("CFGGuider", model=model, positive=pos, negative=neg, cfg=2.0)
        noise = g.add("RandomNoise", noise_seed=0)
        sampled = ng.out(g.add("SamplerCustomAdvanced", noise=ng.out(noise), guider=ng.out(guider), sampler=sampler,
                               sigmas=sigmas, latent_image=latent))
        node = "FlowMatchODESampler"
    image = g.add("VAEDecode", samples=sampled, vae=ng.out(loader, 2))
    g.add("SaveImage", images=ng.out(image), filename_prefix=f"nan_{path}")
    entry = server.run_prompt(g.prompt)
    assert entry["status"]["status_str"] == "error"
    message = ng.error_message(entry)
    assert f"{node}: non-finite values at step {bad_step}/{steps}" in message, message
    assert "dtype" in message
    assert not list(server.output_dir.glob(f"nan_{path}*"))


@pytest.mark.parametrize("name", ["tiny_sd3_f8_e4m3", "tiny_sd3_f8_e5m2"])
def test_fp8_native_checkpoint_loads_and_samples_like_comfyui(native, name):
    """Float8 files (the usual Flux / SD3.5 downloads) pass our header check and sample
    exactly as ComfyUI's own UNETLoader + KSampler do with the same file."""
    server, report = native
    assert report[name]["model"] == "SD3"

    def run(loader, inputs, sampler):
        g = ng.Graph()
        model = ng.out(g.add(loader, **inputs))
        pos, neg = conds(g, SD3_COND)
        latent = ng.out(g.add("EmptySD3LatentImage", width=32, height=32, batch_size=1))
        common = dict(model=model, seed=3, steps=2, cfg=2.0, positive=pos, negative=neg, latent_image=latent,
                      denoise=1.0)
        if sampler == "FlowMatchSampler":
            sampled = g.add(sampler, solver="euler", schedule="model default", shift=3.0, **common)
        else:
            sampled = g.add(sampler, sampler_name="euler", scheduler="simple", **common)
        return sample_native(server, g, g.add("SaveLatent", samples=ng.out(sampled), filename_prefix=name))

    ours = run("FlowMatchModelLoader", {"ckpt_name": f"{name}.safetensors"}, "FlowMatchSampler")
    comfy = run("UNETLoader", {"unet_name": f"{name}.safetensors", "weight_dtype": "default"}, "KSampler")
    assert ours.shape == (1, 16, 4, 4) and torch.isfinite(ours).all()
    torch.testing.assert_close(ours, comfy, atol=1e-5, rtol=1e-5)


# (latent format, ComfyUI's own empty-latent node for it, that node's inputs)
NATIVE_EMPTY_LATENTS = [
    ("SD3", "EmptySD3LatentImage", dict(width=128, height=96, batch_size=2)),
    ("Wan21", "EmptyHunyuanLatentVideo", dict(width=128, height=96, length=17, batch_size=1)),
    ("LTXV", "EmptyLTXVLatentVideo", dict(width=128, height=96, length=17, batch_size=1)),
    ("Mochi", "EmptyMochiLatentVideo", dict(width=128, height=96, length=19, batch_size=1)),
    ("Cosmos1CV8x8x8", "EmptyCosmosLatentVideo", dict(width=128, height=96, length=17, batch_size=1)),
    ("HunyuanVideo15", "EmptyHunyuanVideo15Latent", dict(width=128, height=96, length=17, batch_size=1)),
    ("HunyuanImage21", "EmptyHunyuanImageLatent", dict(width=128, height=96, batch_size=1)),
    ("Flux2", "EmptyFlux2LatentImage", dict(width=128, height=96, batch_size=1)),
    ("ChromaRadiance", "EmptyChromaRadianceLatentImage", dict(width=128, height=96, batch_size=1)),
]


def test_empty_latent_takes_scale_and_channels_from_the_models_latent_format(native):
    """FlowMatchEmptyLatent against ComfyUI's own empty-latent node of each family (Wan 2.2
    has none without a VAE: its 16x / 4x scale is checked through Wan22's shape below)."""
    server, _ = native
    g = ng.Graph()
    base = ng.out(g.add("FlowMatchModelLoader", ckpt_name="tiny_sd3.safetensors"))
    saves = {}
    for fmt, node, inputs in NATIVE_EMPTY_LATENTS + [("Wan22", None, dict(width=128, height=96, length=17,
                                                                           batch_size=1))]:
        model = ng.out(g.add("FMTestLatentFormat", model=base, latent_format=fmt))
        ours = g.add("FlowMatchEmptyLatent", model=model, **inputs)
        theirs = g.add(node, **inputs) if node else None
        saves[fmt] = [g.add("SaveLatent", samples=ng.out(n), filename_prefix=f"empty_{fmt}_{i}")
                      for i, n in enumerate(x for x in (ours, theirs) if x)]
    entry = server.run_prompt(g.prompt)
    assert entry["status"]["status_str"] == "success", ng.error_message(entry)
    shapes = {fmt: [tuple(ng.saved_latent(server, entry, s).shape) for s in ids] for fmt, ids in saves.items()}
    for fmt, node, _ in NATIVE_EMPTY_LATENTS:
        ours, theirs = shapes[fmt]
        assert ours == theirs, (fmt, node, ours, theirs)
    assert shapes["Wan22"] == [(1, 48, 5, 6, 8)]


def test_native_latent_over_comfyuis_memory_estimate_is_refused(native):
    """8192 x 8192, batch 16 for SD3: the latent itself is 1 GiB, one model call by ComfyUI's own
    estimate is terabytes; refused by the empty latent, and the server runs the next prompt."""
    server, _ = native
    g = ng.Graph()
    model = ng.out(g.add("FlowMatchModelLoader", ckpt_name="tiny_sd3.safetensors"))
    latent = g.add("FlowMatchEmptyLatent", model=model, width=8192, height=8192, batch_size=16)
    g.add("SaveLatent", samples=ng.out(latent), filename_prefix="too_big")
    entry = server.run_prompt(g.prompt)
    assert entry["status"]["status_str"] == "error"
    message = ng.error_message(entry)
    assert message.startswith("FlowMatchEmptyLatent: a latent of batch 16, 16 channels, 1024x1024 needs about"), message
    assert "per model call (ComfyUI's estimate)" in message and "FLOWMATCH_MEMORY_CHECK=off" in message, message


@pytest.mark.parametrize("fmt, width, expected", [
    ("LTXV", 16, "FlowMatchEmptyLatent: 16x64 is smaller than one latent cell of this model (32x32 pixels)"),
    ("StableAudio1", 64, "FlowMatchEmptyLatent: the model takes 1-D latents, not images or video"),
])
def test_empty_latent_the_models_format_cannot_hold_is_refused(native, fmt, width, expected):
    server, _ = native
    g = ng.Graph()
    base = ng.out(g.add("FlowMatchModelLoader", ckpt_name="tiny_sd3.safetensors"))
    model = ng.out(g.add("FMTestLatentFormat", model=base, latent_format=fmt))
    latent = g.add("FlowMatchEmptyLatent", model=model, width=width, height=64, batch_size=1)
    g.add("SaveLatent", samples=ng.out(latent), filename_prefix="cannot_hold")
    entry = server.run_prompt(g.prompt)
    assert entry["status"]["status_str"] == "error" and expected in ng.error_message(entry), ng.error_message(entry)


def test_trajectory_on_sd3_samples_what_flowmatch_euler_samples(native):
    """The straightness node on a native model: its trajectory is Flow Match Sampler's Euler path."""
    server, _ = native
    latents = []
    for node in ("FlowMatchSampler", "FlowMatchTrajectory"):
        g = ng.Graph()
        model = ng.out(g.add("FlowMatchModelLoader", ckpt_name="tiny_sd3.safetensors"))
        pos, neg = conds(g, SD3_COND)
        latent = ng.out(g.add("FlowMatchEmptyLatent", model=model, width=64, height=64, batch_size=1))
        common = dict(model=model, seed=3, steps=4, cfg=2.5, schedule="model default", shift=3.0, positive=pos,
                      negative=neg, latent_image=latent)
        if node == "FlowMatchSampler":
            sampled = ng.out(g.add(node, solver="euler", denoise=1.0, **common))
        else:
            trajectory = g.add(node, frames=3, **common)
            sampled = ng.out(trajectory, 2)
            strip = g.add("SaveImage", images=ng.out(trajectory), filename_prefix="strip")
        save = g.add("SaveLatent", samples=sampled, filename_prefix=node)
        entry = server.run_prompt(g.prompt)
        assert entry["status"]["status_str"] == "success", ng.error_message(entry)
        latents.append(ng.saved_latent(server, entry, save))
    torch.testing.assert_close(latents[1], latents[0], atol=1e-5, rtol=1e-5)
    (image,) = ng.saved_images(server, entry, strip)
    assert image.shape == (8, 3 * 8, 3)  # latent-preview colours of the 8x8 latent, three frames
    text = "\n".join(entry["outputs"][trajectory]["text"])
    assert "straightness S = " in text and "Euler 4 steps, cfg 2.5" in text
