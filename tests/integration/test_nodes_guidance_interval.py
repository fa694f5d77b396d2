"""Flow Match Guidance Interval on the shared real server, checked against ComfyUI's own nodes:
an interval holding every sigma changes nothing, one holding none equals cfg 1, and one that
splits the schedule equals SplitSigmas + two SamplerCustom runs (cfg 4, then cfg 1)."""

import importlib.util
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.integration

_spec = importlib.util.spec_from_file_location("node_graphs", Path(__file__).with_name("node_graphs.py"))
ng = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ng)

SIZE = 16
STEPS = 4  # uniform: sigmas 1, 0.75, 0.5, 0.25, 0
CFG = 4.0


@pytest.fixture(scope="module")
def tiny(comfy_server, tmp_path_factory):
    return ng.install_tiny_flowmatch(comfy_server, tmp_path_factory.mktemp("tiny_guidance"), "tiny_guidance.safetensors")


def inputs(g, ckpt, interval=None):
    """loader -> (guidance interval) model, prompts, empty latent, uniform sigmas."""
    loader = g.add("FlowMatchModelLoader", ckpt_name=ckpt)
    model = ng.out(loader)
    if interval is not None:
        model = ng.out(g.add("FlowMatchGuidanceInterval", model=model, sigma_low=interval[0], sigma_high=interval[1]))
    pos = g.add("FlowMatchTextEncode", clip=ng.out(loader, 1), text="a red circle on a blue background")
    neg = g.add("FlowMatchTextEncode", clip=ng.out(loader, 1), text="")
    latent = g.add("FlowMatchEmptyLatent", model=ng.out(loader), width=SIZE, height=SIZE, batch_size=1)
    sigmas = g.add("FlowMatchScheduler", model=ng.out(loader), schedule="uniform", steps=STEPS, shift=3.0,
                   denoise=1.0, width=SIZE, height=SIZE)
    return model, ng.out(pos), ng.out(neg), ng.out(latent), ng.out(sigmas)


def custom(g, model, pos, neg, latent, sigmas, cfg, add_noise=True):
    sampler = g.add("KSamplerSelect", sampler_name="euler")
    return g.add("SamplerCustom", model=model, add_noise=add_noise, noise_seed=3, cfg=cfg, positive=pos, negative=neg,
                 sampler=ng.out(sampler), sigmas=sigmas, latent_image=latent)


def run_latent(server, g, node) -> torch.Tensor:
    save = g.add("SaveLatent", samples=ng.out(node), filename_prefix="guidance")
    entry = server.run_prompt(g.prompt)
    assert entry["status"]["status_str"] == "success", ng.error_message(entry)
    return ng.saved_latent(server, entry, save)


def sampled(server, ckpt, interval=None, cfg=CFG, sampler="SamplerCustom") -> torch.Tensor:
    g = ng.Graph()
    model, pos, neg, latent, sigmas = inputs(g, ckpt, interval)
    if sampler == "SamplerCustom":
        node = custom(g, model, pos, neg, latent, sigmas, cfg)
    else:
        node = g.add("FlowMatchSampler", model=model, seed=3, steps=STEPS, cfg=cfg, solver="flow_2m", schedule="uniform",
                     shift=3.0, positive=pos, negative=neg, latent_image=latent, denoise=1.0)
    return run_latent(server, g, node)


@pytest.mark.parametrize("sampler", ["SamplerCustom", "FlowMatchSampler"])
def test_interval_holding_every_sigma_changes_nothing(comfy_server, tiny, sampler):
    plain = sampled(comfy_server, tiny, sampler=sampler)
    assert torch.equal(sampled(comfy_server, tiny, (0.0, 1.0), sampler=sampler), plain)
    assert not torch.equal(sampled(comfy_server, tiny, cfg=1.0, sampler=sampler), plain)  # guidance does matter here


@pytest.mark.parametrize("sampler", ["SamplerCustom", "FlowMatchSampler"])
def test_interval_holding_no_sigma_equals_cfg_1(comfy_server, tiny, sampler):
    assert torch.equal(sampled(comfy_server, tiny, (50.0, 60.0), sampler=sampler),
                       sampled(comfy_server, tiny, cfg=1.0, sampler=sampler))


def test_interval_over_the_first_two_steps_equals_split_sigmas_with_cfg_4_then_1(comfy_server, tiny):
    limited = sampled(comfy_server, tiny, (0.6, 1.0))  # guidance at sigma 1 and 0.75, not at 0.5 and 0.25
    g = ng.Graph()
    model, pos, neg, latent, sigmas = inputs(g, tiny)
    split = g.add("SplitSigmas", sigmas=sigmas, step=2)
    high = custom(g, model, pos, neg, latent, ng.out(split, 0), CFG)
    low = custom(g, model, pos, neg, ng.out(high), ng.out(split, 1), 1.0, add_noise=False)
    reference = run_latent(comfy_server, g, low)
    assert torch.allclose(limited, reference, atol=1e-6, rtol=0)
    assert not torch.allclose(limited, sampled(comfy_server, tiny), atol=1e-3)
    assert not torch.allclose(limited, sampled(comfy_server, tiny, cfg=1.0), atol=1e-3)


def test_empty_interval_is_refused_at_queue_time(comfy_server, tiny):
    g = ng.Graph()
    model, pos, neg, latent, sigmas = inputs(g, tiny, (0.9, 0.5))
    g.add("SaveLatent", samples=ng.out(custom(g, model, pos, neg, latent, sigmas, CFG)), filename_prefix="guidance")
    status, body = comfy_server.post_json("/prompt", {"prompt": g.prompt})
    assert status == 400, body
    details = [e["details"] for errors in body["node_errors"].values() for e in errors["errors"]]
    assert any("FlowMatchGuidanceInterval: sigma_low 0.9 is above sigma_high 0.5" in d for d in details), details
