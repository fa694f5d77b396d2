"""A fresh ComfyUI with the pack as a plain `git clone` leaves it (folder `comfyui-flowmatch`,
a copy of the tracked files, no symlink) lists and loads native flow models from ComfyUI's
standard model folders: models/diffusion_models, models/checkpoints and a diffusion_models
folder added by extra_model_paths.yaml; non-flow files there are refused as before."""

import importlib.util
import shutil
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.integration

_spec = importlib.util.spec_from_file_location("node_graphs", Path(__file__).with_name("node_graphs.py"))
ng = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ng)

CLONE_FOLDER = "comfyui-flowmatch"  # what `git clone <repository URL>` names the folder
SD3_COND = dict(width=4096, length=8, pooled_width=2048)


@pytest.fixture(scope="module")
def clone_server(start_comfy_server, copy_pack_files, tmp_path_factory):
    base = tmp_path_factory.mktemp("fresh_comfy")
    copy_pack_files(base / "custom_nodes" / CLONE_FOLDER)
    built = tmp_path_factory.mktemp("built")
    ng.build_tiny_checkpoints(built)
    yaml_folder = tmp_path_factory.mktemp("yaml_diffusion_models")
    for source, target in (("tiny_sd3", base / "models" / "diffusion_models" / "tiny_sd3.safetensors"),
                           ("tiny_pixart_eps", base / "models" / "checkpoints" / "tiny_pixart_eps.safetensors"),
                           ("tiny_wan21", yaml_folder / "tiny_wan21_from_yaml.safetensors")):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(built / f"{source}.safetensors", target)
    yaml = ng.extra_paths_yaml(tmp_path_factory.mktemp("yaml") / "extra.yaml", diffusion_models=yaml_folder)
    return start_comfy_server("--extra-model-paths-config", str(yaml), base_dir=base, pack_folder=CLONE_FOLDER)


def run(server, g, save):
    entry = server.run_prompt(g.prompt)
    assert entry["status"]["status_str"] == "success", ng.error_message(entry)
    return ng.saved_latent(server, entry, save)


def test_pack_loads_from_the_clone_folder_and_lists_the_standard_folders(clone_server):
    assert (clone_server.base_dir / "custom_nodes" / CLONE_FOLDER / "__init__.py").is_file()
    assert not (clone_server.base_dir / "custom_nodes" / CLONE_FOLDER).is_symlink()
    loader = clone_server.get_json("/object_info/FlowMatchModelLoader")["FlowMatchModelLoader"]
    assert loader["python_module"] == f"custom_nodes.{CLONE_FOLDER}"
    options = loader["input"]["required"]["ckpt_name"][1]["options"]
    assert options[0] == ng.BUNDLED, options  # the flow_matching folder (bundled model) comes first
    assert {"tiny_sd3.safetensors", "tiny_pixart_eps.safetensors", "tiny_wan21_from_yaml.safetensors"} <= set(options)


def test_sd3_in_diffusion_models_samples_like_comfyui_own_loader_and_sampler(clone_server):
    steps, cfg, seed = 3, 2.0, 7
    g = ng.Graph()
    model = ng.out(g.add("FlowMatchModelLoader", ckpt_name="tiny_sd3.safetensors"))
    pos, neg = (ng.out(g.add("FMTestConditioning", seed=s, **SD3_COND)) for s in (1, 2))
    latent = ng.out(g.add("FlowMatchEmptyLatent", model=model, width=64, height=64, batch_size=1))
    sampled = g.add("FlowMatchSampler", model=model, seed=seed, steps=steps, cfg=cfg, solver="euler",
                    schedule="model default", shift=3.0, positive=pos, negative=neg, latent_image=latent, denoise=1.0)
    ours = run(clone_server, g, g.add("SaveLatent", samples=ng.out(sampled), filename_prefix="clone_ours"))

    g = ng.Graph()
    model = ng.out(g.add("UNETLoader", unet_name="tiny_sd3.safetensors", weight_dtype="default"))
    pos, neg = (ng.out(g.add("FMTestConditioning", seed=s, **SD3_COND)) for s in (1, 2))
    latent = ng.out(g.add("EmptySD3LatentImage", width=64, height=64, batch_size=1))
    sigmas = ng.out(g.add("BasicScheduler", model=model, scheduler="simple", steps=steps, denoise=1.0))
    guider = ng.out(g.add("CFGGuider", model=model, positive=pos, negative=neg, cfg=cfg))
    sampled = g.add("SamplerCustomAdvanced", noise=ng.out(g.add("RandomNoise", noise_seed=seed)), guider=guider,
                    sampler=ng.out(g.add("KSamplerSelect", sampler_name="euler")), sigmas=sigmas, latent_image=latent)
    reference = run(clone_server, g, g.add("SaveLatent", samples=ng.out(sampled), filename_prefix="clone_native"))

    assert ours.shape == reference.shape == (1, 16, 8, 8)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_wan_in_a_yaml_diffusion_models_folder_loads(clone_server):
    g = ng.Graph()
    model = ng.out(g.add("FlowMatchModelLoader", ckpt_name="tiny_wan21_from_yaml.safetensors"))
    latent = g.add("FlowMatchEmptyLatent", model=model, width=32, height=32, batch_size=1, length=5)
    result = run(clone_server, g, g.add("SaveLatent", samples=ng.out(latent), filename_prefix="clone_wan"))
    assert result.shape == (1, 16, 2, 4, 4)  # Wan's video latent: the loader gave a Wan model


def test_non_flow_checkpoint_in_checkpoints_is_refused_naming_its_type(clone_server):
    g = ng.Graph()
    model = ng.out(g.add("FlowMatchModelLoader", ckpt_name="tiny_pixart_eps.safetensors"))
    g.add("SaveLatent", samples=ng.out(g.add("FlowMatchEmptyLatent", model=model, width=16, height=16, batch_size=1)),
          filename_prefix="clone_eps")
    entry = clone_server.run_prompt(g.prompt)
    assert entry["status"]["status_str"] == "error"
    message = ng.error_message(entry)
    assert "tiny_pixart_eps.safetensors" in message and "PixArt" in message and "EPS" in message, message
    assert "KSampler" in message, message
