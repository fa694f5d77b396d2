"""Flow Match Optimal Schedule and the 'optimal' schedule of the sampler nodes, on the shared
real server with a tiny checkpoint (a coarse search keeps it fast)."""

import importlib.util
import re
from pathlib import Path

import pytest
import torch

from comfyui_flowmatch.samplers.optimal import candidate_sigmas

pytestmark = pytest.mark.integration

_spec = importlib.util.spec_from_file_location("node_graphs", Path(__file__).with_name("node_graphs.py"))
ng = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ng)

SIZE = 16
CANDIDATES = 8


@pytest.fixture(scope="module")
def tiny(comfy_server, tmp_path_factory):
    return ng.install_tiny_flowmatch(comfy_server, tmp_path_factory.mktemp("tiny_optimal"), "tiny_optimal.safetensors")


def graph_inputs(g, ckpt, prompt="a red circle"):
    loader = g.add("FlowMatchModelLoader", ckpt_name=ckpt)
    pos = g.add("FlowMatchTextEncode", clip=ng.out(loader, 1), text=prompt)
    neg = g.add("FlowMatchTextEncode", clip=ng.out(loader, 1), text="")
    latent = g.add("FlowMatchEmptyLatent", model=ng.out(loader), width=SIZE, height=SIZE, batch_size=1)
    return loader, pos, neg, latent


def search_node(g, ckpt, steps, solver="midpoint", cfg=3.0):
    loader, pos, neg, latent = graph_inputs(g, ckpt)
    return g.add("FlowMatchOptimalSchedule", model=ng.out(loader), positive=ng.out(pos), negative=ng.out(neg), cfg=cfg,
                 solver=solver, steps=steps, seed=5, latent_image=ng.out(latent), candidates=CANDIDATES)


def text_of(server, g, node_id) -> str:
    entry = server.run_prompt(g.prompt)
    assert entry["status"]["status_str"] == "success", ng.error_message(entry) or entry["status"]
    return entry["outputs"][node_id]["text"][0]


def sigmas_in(text: str) -> list[float]:
    return [float(s) for s in text.split("sigmas: ")[1].split(", ")]


def test_search_runs_once_and_its_grid_feeds_both_sampler_nodes(comfy_server, tiny):
    g = ng.Graph()
    node = search_node(g, tiny, steps=3)
    first = text_of(comfy_server, g, node)
    assert "searched now" in first
    nfe = int(re.search(r"search cost (\d+) model evaluations", first).group(1))
    assert nfe > 0
    sigmas = sigmas_in(first)
    assert len(sigmas) == 4 and sigmas[0] == 1.0 and sigmas[-1] == 0.0
    candidates = [round(s, 4) for s in candidate_sigmas(CANDIDATES).tolist()]
    assert all(round(s, 4) in candidates for s in sigmas)
    assert list((comfy_server.base_dir / "user" / "__flowmatch_schedules").glob("*-midpoint-*.json"))

    g = ng.Graph()
    node = search_node(g, tiny, steps=2)  # another step count: same search, read from the cache
    again = text_of(comfy_server, g, node)
    assert "from the cache" in again and f"search cost {nfe} model evaluations" in again

    g = ng.Graph()
    save = ng.text_to_image(g, tiny, "a blue square", size=SIZE, steps=3, cfg=3.0, solver="midpoint", schedule="optimal")
    sampler = next(k for k, v in g.prompt.items() if v["class_type"] == "FlowMatchSampler")
    sampled = text_of(comfy_server, g, sampler)
    assert sampled.startswith("midpoint: 6 model evaluations (NFE)") and "from the cache" in sampled
    assert sigmas_in(sampled) == sigmas

    g = ng.Graph()
    sampled = scheduled_run(g, tiny, "midpoint")
    saver = g.add("SaveLatent", samples=ng.out(sampled), filename_prefix="optimal_sigmas")
    entry = comfy_server.run_prompt(g.prompt)
    assert entry["status"]["status_str"] == "success", ng.error_message(entry)
    assert torch.isfinite(ng.saved_latent(comfy_server, entry, saver)).all()


def scheduled_run(g, ckpt, solver):
    """FlowMatchScheduler(optimal) -> SamplerCustomAdvanced with FlowMatchODESampler; returns the sampler id."""
    loader, pos, _, latent = graph_inputs(g, ckpt)
    scheduler = g.add("FlowMatchScheduler", model=ng.out(loader), schedule="optimal", steps=3, shift=3.0, denoise=1.0,
                      width=SIZE, height=SIZE, solver=solver)
    guider = g.add("BasicGuider", model=ng.out(loader), conditioning=ng.out(pos))
    return g.add("SamplerCustomAdvanced", noise=ng.out(g.add("RandomNoise", noise_seed=0)), guider=ng.out(guider),
                 sampler=ng.out(g.add("FlowMatchODESampler", solver=solver)), sigmas=ng.out(scheduler),
                 latent_image=ng.out(latent))


def test_scheduler_without_a_searched_grid_says_how_to_get_one(comfy_server, tiny):
    g = ng.Graph()
    g.add("SaveLatent", samples=ng.out(scheduled_run(g, tiny, "rk3")), filename_prefix="no_grid")
    entry = comfy_server.run_prompt(g.prompt)
    assert entry["status"]["status_str"] == "error"
    assert "no optimal schedule has been searched for this model and solver 'rk3'" in ng.error_message(entry)


def test_bundled_model_uses_its_shipped_grid_without_searching(comfy_server):
    from comfyui_flowmatch.models.checkpoint import load_checkpoint
    from comfyui_flowmatch.models.generate import DEFAULT_CHECKPOINT
    from comfyui_flowmatch.models.optimal_schedule import fingerprint
    from comfyui_flowmatch.samplers.optimal import shipped_record

    record = shipped_record(fingerprint(load_checkpoint(str(DEFAULT_CHECKPOINT))), "euler", 4.0)
    assert record is not None, "samplers/optimal_schedules.json has no euler grid for the bundled model"
    g = ng.Graph()
    ng.text_to_image(g, ng.BUNDLED, "a red circle on a black background", steps=4, cfg=4.0, solver="euler",
                     schedule="optimal")
    sampler = next(k for k, v in g.prompt.items() if v["class_type"] == "FlowMatchSampler")
    text = text_of(comfy_server, g, sampler)
    assert "from the cache/shipped grids" in text
    assert sigmas_in(text) == pytest.approx(record.grid(4)[0].tolist(), abs=1e-4)
