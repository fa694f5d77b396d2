"""Flow Match Invert and Flow Match Edit on the tiny random-weight native SD3 and Flux models
(ComfyUI's own model classes, see build_tiny_checkpoints.py): the wiring runs through each
model's latent format, conditioning and model sampling, and gives finite latents of the
right shape. Quality is only checked on the trained bundled model (test_nodes_editing.py).
The server is `native` (conftest.py), shared with test_nodes_native.py."""

import importlib.util
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.integration

_spec = importlib.util.spec_from_file_location("node_graphs", Path(__file__).with_name("node_graphs.py"))
ng = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ng)

MODELS = {
    "sd3": (dict(width=4096, length=8, pooled_width=2048), (1, 16, 8, 8)),
    "flux": (dict(width=4096, length=8, pooled_width=768), (1, 16, 8, 8)),
}


def model_link(g, name):
    if name == "sd3":
        return ng.out(g.add("FlowMatchModelLoader", ckpt_name="tiny_sd3.safetensors"))
    return ng.out(g.add("FMTestTinyFlux", seed=0))


@pytest.mark.parametrize("name", list(MODELS))
def test_invert_sample_and_edit_on_native_models(native, name):
    server, _ = native
    spec, shape = MODELS[name]
    g = ng.Graph()
    model = model_link(g, name)
    pos, target, neg = (ng.out(g.add("FMTestConditioning", seed=seed, **spec)) for seed in (1, 2, 3))
    empty = ng.out(g.add("FlowMatchEmptyLatent", model=model, width=64, height=64, batch_size=1))
    source = ng.out(g.add("FlowMatchSampler", model=model, seed=5, steps=2, cfg=2.0, solver="euler",
                          schedule="model default", shift=3.0, positive=pos, negative=neg, latent_image=empty,
                          denoise=1.0))
    invert = g.add("FlowMatchInvert", model=model, positive=pos, negative=neg, latent_image=source, solver="heun",
                   steps=3, cfg=1.5, schedule="model default", shift=3.0, denoise=1.0, show_round_trip=True)
    back = g.add("FlowMatchSampler", model=model, seed=0, steps=3, cfg=1.5, solver="heun", schedule="model default",
                 shift=3.0, positive=pos, negative=neg, latent_image=source, denoise=1.0, noise=ng.out(invert))
    edits = {update: g.add("FlowMatchEdit", model=model, source=pos, target=target, negative=neg, latent_image=source,
                           seed=0, steps=4, n_max=3, n_min=1, n_avg=2, source_cfg=1.5, target_cfg=3.0, solver="midpoint",
                           schedule="model default", shift=3.0, update=update)
             for update in ("renoised", "flowedit ode")}
    saves = {key: g.add("SaveLatent", samples=link, filename_prefix=f"{name}_{key}")
             for key, link in (("back", ng.out(back)), *((f"edit {u}", ng.out(e)) for u, e in edits.items()))}
    entry = server.run_prompt(g.prompt)
    assert entry["status"]["status_str"] == "success", ng.error_message(entry)
    for key, node in saves.items():
        latent = ng.saved_latent(server, entry, node)
        assert latent.shape == shape, key
        assert torch.isfinite(latent).all() and latent.std() > 0, key
    (invert_text,) = entry["outputs"][invert]["text"]
    assert invert_text.startswith("inverted with heun: 6 model evaluations (NFE); round trip:"), invert_text
    for update, how in (("renoised", "renoised, relaxation 0.5, bound 2"), ("flowedit ode", "the paper's ODE")):
        (edit_text,) = entry["outputs"][edits[update]]["text"]
        # 2 edit steps x 2 draws x 2 prompts + 1 midpoint step x 2 calls
        assert edit_text.startswith(f"FlowEdit ({how}): 2 edit steps of 4, 1 regenerated, 10 model evaluations (NFE)"), \
            edit_text
