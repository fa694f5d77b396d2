"""Flow Match Invert and Flow Match Edit on the bundled model through a real server:
inversion then sampling reconstructs the image (PSNR against the image itself), the NOISE
plugs into SamplerCustomAdvanced, FlowEdit with one prompt on both sides leaves the image
alone, and a colour edit is judged by the model's analytic checker (models.evaluate.judge)."""

import importlib.util
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from comfyui_flowmatch.models.edit_bench import MASK_IOU_MIN, mask_iou
from comfyui_flowmatch.models.evaluate import analyze, judge

pytestmark = pytest.mark.integration

_spec = importlib.util.spec_from_file_location("node_graphs", Path(__file__).with_name("node_graphs.py"))
ng = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ng)

SOURCE = "a red circle on a black background"
INVERSION = dict(solver="midpoint", steps=8, cfg=1.0, schedule="sd3 shift", shift=3.0)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * math.log10(1 / max(float(((a - b) ** 2).mean()), 1e-12))


def source_graph(prompt=SOURCE, seed=3):
    """loader, prompt encodes and a generated source latent; returns (graph, links)."""
    g = ng.Graph()
    loader = g.add("FlowMatchModelLoader", ckpt_name=ng.BUNDLED)
    model, clip, vae = ng.out(loader, 0), ng.out(loader, 1), ng.out(loader, 2)
    pos = ng.out(g.add("FlowMatchTextEncode", clip=clip, text=prompt))
    neg = ng.out(g.add("FlowMatchTextEncode", clip=clip, text=""))
    empty = ng.out(g.add("FlowMatchEmptyLatent", model=model, width=32, height=32, batch_size=1))
    latent = ng.out(g.add("FlowMatchSampler", model=model, seed=seed, steps=20, cfg=4.0, solver="euler",
                          schedule="model default", shift=3.0, positive=pos, negative=neg, latent_image=empty,
                          denoise=1.0))
    return g, dict(model=model, clip=clip, vae=vae, pos=pos, neg=neg, latent=latent)


def save(g, links, latent, prefix):
    return g.add("SaveImage", images=ng.out(g.add("VAEDecode", samples=latent, vae=links["vae"])), filename_prefix=prefix)


def run(server, g):
    entry = server.run_prompt(g.prompt)
    assert entry["status"]["status_str"] == "success", ng.error_message(entry) or entry["status"]
    return entry


def test_invert_then_sample_reconstructs_the_image(comfy_server):
    g, links = source_graph()
    original = save(g, links, links["latent"], "edit_source")
    invert = g.add("FlowMatchInvert", model=links["model"], positive=links["pos"], negative=links["neg"],
                   latent_image=links["latent"], denoise=1.0, show_round_trip=True, **INVERSION)
    sampled = g.add("FlowMatchSampler", model=links["model"], seed=0, positive=links["pos"], negative=links["neg"],
                    latent_image=links["latent"], denoise=1.0, noise=ng.out(invert), **INVERSION)
    reconstruction = save(g, links, ng.out(sampled), "edit_reconstruction")
    # The same NOISE through ComfyUI's own SamplerCustomAdvanced.
    guider = g.add("CFGGuider", model=links["model"], positive=links["pos"], negative=links["neg"], cfg=1.0)
    sigmas = g.add("FlowMatchScheduler", model=links["model"], schedule="sd3 shift", steps=8, shift=3.0, denoise=1.0,
                   width=32, height=32)
    sampler = g.add("FlowMatchODESampler", solver="midpoint")
    advanced = g.add("SamplerCustomAdvanced", noise=ng.out(invert), guider=ng.out(guider), sampler=ng.out(sampler),
                     sigmas=ng.out(sigmas), latent_image=links["latent"])
    via_advanced = save(g, links, ng.out(advanced), "edit_advanced")
    entry = run(comfy_server, g)

    (source,) = ng.saved_images(comfy_server, entry, original)
    (ours,) = ng.saved_images(comfy_server, entry, reconstruction)
    (theirs,) = ng.saved_images(comfy_server, entry, via_advanced)
    assert judge(torch.from_numpy(source).permute(2, 0, 1), SOURCE)["all"]
    assert psnr(ours, source) >= 30, psnr(ours, source)
    assert psnr(theirs, source) >= 30, psnr(theirs, source)
    (text,) = entry["outputs"][invert]["text"]
    assert text.startswith("inverted with midpoint: 16 model evaluations (NFE); round trip: RMSE"), text
    assert float(re.search(r"PSNR ([\d.]+) dB", text).group(1)) >= 30, text


def edit_graph(target: str, source_cfg: float, target_cfg: float, prefix: str, n_max: int = 5, n_avg: int = 1,
               **update):
    """`update`: the optional update / relaxation inputs (absent: the node's defaults)."""
    g, links = source_graph()
    original = save(g, links, links["latent"], prefix)  # a fresh SaveImage: cached ones report nothing
    target_cond = ng.out(g.add("FlowMatchTextEncode", clip=links["clip"], text=target))
    edit = g.add("FlowMatchEdit", model=links["model"], source=links["pos"], target=target_cond, negative=links["neg"],
                 latent_image=links["latent"], seed=1, steps=10, n_max=n_max, n_min=0, n_avg=n_avg,
                 source_cfg=source_cfg, target_cfg=target_cfg, solver="euler", schedule="model default", shift=3.0,
                 **update)
    return g, original, save(g, links, ng.out(edit), "edited"), edit


@pytest.mark.parametrize("update, how", [({}, "renoised, relaxation 0.5, bound 2"),
                                         ({"data_bound": 0.0}, "renoised, relaxation 0.5, no bound"),
                                         ({"update": "flowedit ode"}, "the paper's ODE")])
def test_flow_edit_with_the_source_prompt_keeps_the_image(comfy_server, update, how):
    prefix = f"edit_same_source_{'_'.join(update) or 'default'}"
    g, original, edited, edit = edit_graph(SOURCE, 4.0, 4.0, prefix, n_max=8, **update)
    entry = run(comfy_server, g)
    (source,) = ng.saved_images(comfy_server, entry, original)
    (same,) = ng.saved_images(comfy_server, entry, edited)
    assert np.abs(source - same).max() <= 1 / 255
    (text,) = entry["outputs"][edit]["text"]
    assert text.startswith(f"FlowEdit ({how}): 8 edit steps of 10, 0 regenerated, 16 model evaluations (NFE)"), text
    assert float(text.rsplit(" ", 1)[1]) < 1e-5, text


@pytest.mark.parametrize("settings", [dict(source_cfg=4.0, target_cfg=4.0, n_avg=2),
                                      dict(source_cfg=1.0, target_cfg=6.0, update="flowedit ode")])
def test_flow_edit_changes_the_colour_and_keeps_the_rest(comfy_server, settings):
    """The node's defaults (renoised) and the paper's ODE with its former defaults."""
    target = "a blue circle on a black background"
    g, original, edited, _ = edit_graph(target, prefix=f"edit_colour_source_{settings['source_cfg']}", **settings)
    entry = run(comfy_server, g)
    (source,) = ng.saved_images(comfy_server, entry, original)
    (result,) = ng.saved_images(comfy_server, entry, edited)
    before, after = (analyze(torch.from_numpy(image).permute(2, 0, 1)) for image in (source, result))
    assert judge(torch.from_numpy(result).permute(2, 0, 1), target)["all"], after
    assert after["position"] == before["position"], (before, after)
    as_tensors = [torch.from_numpy(image).permute(2, 0, 1) for image in (source, result)]
    assert mask_iou(*as_tensors) >= MASK_IOU_MIN, mask_iou(*as_tensors)


def test_flow_edit_refuses_an_unknown_update_at_queue_time(comfy_server):
    g, _, _, edit = edit_graph("a blue circle on a black background", 4.0, 4.0, "edit_bad_update", update="sde")
    _, body = comfy_server.post_json("/prompt", {"prompt": g.prompt})  # the source's SaveImage may still run
    details = body["node_errors"][edit]["errors"][0]["details"]
    assert "FlowMatchEdit: update 'sde' is not one of ['renoised', 'flowedit ode']" in details, details
