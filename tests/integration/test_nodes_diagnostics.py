"""Flow Match Trajectory and Flow Match Likelihood on a real server, checked against the pure-torch
computation on the same checkpoint, noise and prompt (ComfyUI's noise: torch.manual_seed + randn)."""

import importlib.util
import re
from pathlib import Path

import pytest
import torch

from comfyui_flowmatch.models.checkpoint import load_checkpoint
from comfyui_flowmatch.models.generate import guided_velocity
from comfyui_flowmatch.samplers.likelihood import bits_per_dim, log_likelihood
from comfyui_flowmatch.samplers.straightness import measure_straightness

pytestmark = pytest.mark.integration

_spec = importlib.util.spec_from_file_location("node_graphs", Path(__file__).with_name("node_graphs.py"))
ng = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ng)

SIZE = 16


@pytest.fixture(scope="module")
def tiny(comfy_server, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("tiny_diag")
    name = ng.install_tiny_flowmatch(comfy_server, out_dir)
    return name, load_checkpoint(out_dir / ng.TINY_FLOWMATCH)


def comfy_noise(seed: int, shape) -> torch.Tensor:
    return torch.randn(shape, generator=torch.manual_seed(seed))


def shown_text(entry: dict, node_id: str) -> str:
    return "\n".join(entry["outputs"][node_id]["text"])


def test_trajectory_reports_the_straightness_of_the_same_flow(comfy_server, tiny):
    name, bundle = tiny
    steps, cfg, seed, frames = 6, 3.0, 5, 4
    g = ng.Graph()
    loader = g.add("FlowMatchModelLoader", ckpt_name=name)
    pos = g.add("FlowMatchTextEncode", clip=ng.out(loader, 1), text="a red circle")
    neg = g.add("FlowMatchTextEncode", clip=ng.out(loader, 1), text="")
    latent = g.add("FlowMatchEmptyLatent", model=ng.out(loader), width=SIZE, height=SIZE, batch_size=1)
    trajectory = g.add("FlowMatchTrajectory", model=ng.out(loader), positive=ng.out(pos), negative=ng.out(neg),
                       latent_image=ng.out(latent), vae=ng.out(loader, 2), seed=seed, steps=steps,
                       schedule="uniform", shift=3.0, cfg=cfg,
                       frames=frames)
    save = g.add("SaveImage", images=ng.out(trajectory), filename_prefix="strip")
    entry = comfy_server.run_prompt(g.prompt)
    assert entry["status"]["status_str"] == "success", ng.error_message(entry)

    (strip,) = ng.saved_images(comfy_server, entry, save)
    assert strip.shape == (SIZE, frames * SIZE, 3)
    shown = float(re.search(r"S = ([0-9.]+)", shown_text(entry, trajectory)).group(1))

    with torch.no_grad():
        velocity = guided_velocity(bundle, ["a red circle"], cfg)
        reference = measure_straightness(velocity, comfy_noise(seed, (1, 3, SIZE, SIZE)),
                                         torch.linspace(0, 1, steps + 1))
    assert shown == pytest.approx(reference.value, abs=2e-5, rel=1e-4)
    last = reference.data_estimates[-1, 0].permute(1, 2, 0).add(1).div(2).clamp(0, 1).numpy()
    assert abs(strip[:, -SIZE:] - last).max() <= 1.5 / 255  # the strip ends at the sampled image


def test_likelihood_node_matches_the_exact_computation(comfy_server, tiny):
    name, bundle = tiny
    steps = 3
    g = ng.Graph()
    loader = g.add("FlowMatchModelLoader", ckpt_name=name)
    cond = g.add("FlowMatchTextEncode", clip=ng.out(loader, 1), text="a blue square")
    image = g.add("EmptyImage", width=SIZE, height=SIZE, batch_size=1, color=0x2040C0)
    node = g.add("FlowMatchLikelihood", model=ng.out(loader), conditioning=ng.out(cond), image=ng.out(image),
                 steps=steps, divergence="exact", probes=2, seed=0)
    g.add("PreviewAny", source=ng.out(node))
    entry = comfy_server.run_prompt(g.prompt)
    assert entry["status"]["status_str"] == "success", ng.error_message(entry)
    shown = float(re.search(r"([0-9.]+) bits/dim", shown_text(entry, node)).group(1))

    rgb = torch.tensor([0x20, 0x40, 0xC0]) / 255
    x1 = (rgb.view(1, 3, 1, 1).expand(1, 3, SIZE, SIZE) * 2 - 1).contiguous()
    with torch.no_grad():
        velocity = guided_velocity(bundle, ["a blue square"], 1.0)
    reference = log_likelihood(velocity, x1, steps=steps, method="midpoint", divergence="exact")
    assert shown == pytest.approx(bits_per_dim(reference.log_p, reference.dims).item(), abs=2e-3)


def test_likelihood_refuses_exact_divergence_on_large_images(comfy_server, tiny):
    name, _ = tiny
    g = ng.Graph()
    loader = g.add("FlowMatchModelLoader", ckpt_name=name)
    cond = g.add("FlowMatchTextEncode", clip=ng.out(loader, 1), text="")
    image = g.add("EmptyImage", width=64, height=64, batch_size=1, color=0)
    node = g.add("FlowMatchLikelihood", model=ng.out(loader), conditioning=ng.out(cond), image=ng.out(image),
                 steps=2, divergence="exact", probes=2, seed=0)
    g.add("PreviewAny", source=ng.out(node))
    entry = comfy_server.run_prompt(g.prompt)
    assert entry["status"]["status_str"] == "error"
    assert "FlowMatchLikelihood: exact divergence needs one backward pass per value" in ng.error_message(entry)
