"""Absurd work and mismatched latents against a real server: each refusal is a validation
or execution error carrying our message (the limit and how to lift it), and the server
runs the next prompt. Nothing here waits for a long run: a refusal that did not happen
would show up as a prompt that succeeds (or times out)."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

pytestmark = pytest.mark.integration

_spec = importlib.util.spec_from_file_location("node_graphs", Path(__file__).with_name("node_graphs.py"))
ng = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ng)

SIZE = 16  # the tiny model's native size (patch 4: 16 tokens; token limit 64 x 16 = 1024 tokens)


@pytest.fixture(scope="module")
def tiny(comfy_server, tmp_path_factory):
    return ng.install_tiny_flowmatch(comfy_server, tmp_path_factory.mktemp("tiny_refusals"), "tiny_refusals.safetensors")


def sampled_graph(ckpt, latent_node=None, sampler="FlowMatchSampler", **sampler_inputs):
    """loader -> encode -> (latent_node or an empty 16 px latent) -> sampler -> SaveLatent."""
    g = ng.Graph()
    loader = g.add("FlowMatchModelLoader", ckpt_name=ckpt)
    pos = g.add("FlowMatchTextEncode", clip=ng.out(loader, 1), text="a red circle")
    neg = g.add("FlowMatchTextEncode", clip=ng.out(loader, 1), text="")
    if latent_node is None:
        latent = g.add("FlowMatchEmptyLatent", model=ng.out(loader), width=SIZE, height=SIZE, batch_size=1)
    else:
        latent = latent_node(g, loader)
    common = dict(model=ng.out(loader), seed=0, steps=2, cfg=2.0, positive=ng.out(pos), negative=ng.out(neg),
                  latent_image=ng.out(latent), denoise=1.0)
    common.update(sampler_inputs)
    if sampler == "FlowMatchSampler":
        sampled = g.add("FlowMatchSampler", solver="euler", schedule="model default", shift=3.0, **common)
    elif sampler == "KSampler":
        sampled = g.add("KSampler", sampler_name="euler", scheduler="simple", **common)
    else:  # SamplerCustomAdvanced with our SAMPLER
        guider = g.add("CFGGuider", model=common["model"], positive=common["positive"],
                       negative=common["negative"], cfg=common["cfg"])
        sigmas = g.add("FlowMatchScheduler", model=common["model"], schedule="uniform", steps=common["steps"],
                       shift=3.0, denoise=common["denoise"], width=SIZE, height=SIZE)
        sampled = g.add("SamplerCustomAdvanced", noise=ng.out(g.add("RandomNoise", noise_seed=0)),
                        guider=ng.out(guider), sampler=ng.out(g.add("FlowMatchODESampler", solver="euler")),
                        sigmas=ng.out(sigmas), latent_image=common["latent_image"])
    g.add("SaveLatent", samples=ng.out(sampled), filename_prefix="refusals")
    return g.prompt


def assert_next_prompt_runs(server, ckpt):
    entry = server.run_prompt(sampled_graph(ckpt))
    assert entry["status"]["status_str"] == "success", ng.error_message(entry)


def validation_error(server, prompt) -> str:
    status, body = server.post_json("/prompt", {"prompt": prompt})
    assert status == 400, body
    details = [e["details"] for errors in body["node_errors"].values() for e in errors["errors"]]
    assert details, body
    return details[0]


def execution_error(server, prompt) -> dict:
    entry = server.run_prompt(prompt, timeout=120)
    assert entry["status"]["status_str"] == "error", "the prompt ran instead of being refused"
    (data,) = [d for event, d in entry["status"]["messages"] if event == "execution_error"]
    assert "Traceback" not in data["exception_message"]
    return data


# -- schedule length -------------------------------------------------------------------------

def test_denoise_1e9_with_1000_steps_is_refused_at_queue_time(comfy_server, tiny):
    details = validation_error(comfy_server, sampled_graph(tiny, steps=1000, denoise=1e-9))
    assert "FlowMatchSampler" in details and "1e+12-step schedule" in details, details
    assert "FLOWMATCH_MAX_SCHEDULE_STEPS" in details and "denoise >= 0.1" in details, details
    assert_next_prompt_runs(comfy_server, tiny)


def test_scheduler_denoise_1e9_is_refused_at_queue_time(comfy_server, tiny):
    details = validation_error(comfy_server, sampled_graph(tiny, sampler="custom", steps=1000, denoise=1e-9))
    assert "FlowMatchScheduler" in details and "FLOWMATCH_MAX_SCHEDULE_STEPS" in details, details


def test_linked_tiny_denoise_is_refused_before_the_schedule_is_built(comfy_server, tiny):
    prompt = sampled_graph(tiny, steps=1000, denoise=["98", 0])
    prompt["98"] = {"class_type": "PrimitiveFloat", "inputs": {"value": 1e-9}}
    data = execution_error(comfy_server, prompt)
    assert data["node_type"] == "FlowMatchSampler" and "FLOWMATCH_MAX_SCHEDULE_STEPS" in data["exception_message"]
    assert_next_prompt_runs(comfy_server, tiny)


@pytest.mark.parametrize("inputs, expected", [
    ({"denoise": math.nan}, "denoise nan must be a number from 0.0 to 1.0"),
    ({"cfg": math.inf}, "cfg inf must be a number from 0.0 to 100.0"),
    ({"steps": 10**9}, "steps 1000000000 must be a number from 1 to 1000"),
])
def test_out_of_range_and_nan_numbers_are_refused_at_queue_time(comfy_server, tiny, inputs, expected):
    details = validation_error(comfy_server, sampled_graph(tiny, **inputs))
    assert expected in details, details


# -- latent size and batch -------------------------------------------------------------------

def empty(width, height, batch_size=1):
    return lambda g, loader: g.add("FlowMatchEmptyLatent", model=ng.out(loader), width=width, height=height,
                                   batch_size=batch_size)


def test_2048px_latent_for_the_16px_model_is_refused_by_the_empty_latent(comfy_server, tiny):
    data = execution_error(comfy_server, sampled_graph(tiny, empty(2048, 2048)))
    assert data["node_type"] == "FlowMatchEmptyLatent", data
    message = data["exception_message"]
    assert "262144 tokens" in message and "the limit is 1024 tokens" in message and "FLOWMATCH_MAX_TOKENS" in message
    assert_next_prompt_runs(comfy_server, tiny)


def test_batch_4096_is_refused_by_the_batch_token_limit(comfy_server, tiny):
    data = execution_error(comfy_server, sampled_graph(tiny, empty(32, 32, 4096)))
    assert "batch_size <= 1024" in data["exception_message"] and "FLOWMATCH_MAX_BATCH_TOKENS" in data["exception_message"]


def test_8192px_batch_4096_is_refused_before_allocating_3_tib(comfy_server, tiny):
    data = execution_error(comfy_server, sampled_graph(tiny, empty(8192, 8192, 4096)))
    message = data["exception_message"]
    assert "takes 3,072.0 GiB" in message and "FLOWMATCH_MEMORY_CHECK=off" in message, message
    assert_next_prompt_runs(comfy_server, tiny)


def encoded_image(size):
    """A non-empty 3-channel latent of `size` px from the pixel-space VAE (any node can make one)."""
    def build(g, loader):
        image = g.add("EmptyImage", width=size, height=size, batch_size=1, color=0x808080)
        return g.add("VAEEncode", pixels=ng.out(image), vae=ng.out(loader, 2))
    return build


@pytest.mark.parametrize("sampler, node", [("FlowMatchSampler", "FlowMatchSampler"),
                                           ("KSampler", "FlowMatch model"),
                                           ("custom", "FlowMatchODESampler")])
def test_2048px_encoded_latent_is_refused_by_every_sampler(comfy_server, tiny, sampler, node):
    data = execution_error(comfy_server, sampled_graph(tiny, encoded_image(2048), sampler=sampler))
    message = data["exception_message"]
    assert message.startswith(f"{node}: a 2048x2048 image is 262144 tokens"), message
    assert_next_prompt_runs(comfy_server, tiny)


# -- latents made for other models -----------------------------------------------------------

def test_empty_sd_latent_into_the_pixel_model_is_refused_not_an_8x8_image(comfy_server, tiny):
    latent = lambda g, loader: g.add("EmptyLatentImage", width=64, height=64, batch_size=1)  # noqa: E731
    message = execution_error(comfy_server, sampled_graph(tiny, latent))["exception_message"]
    assert "4 channels, 8x8" in message and "FlowMatch takes 3-channel latents at 1x scale" in message, message
    assert "8x8 image instead of 64x64" in message


def load_latent_file(server, name, tensor):
    """A .latent file in the server's input folder, loaded by ComfyUI's LoadLatent."""
    save_file({"latent_tensor": tensor.contiguous(), "latent_format_version_0": torch.tensor([])},
              str(server.base_dir / "input" / name))
    return lambda g, loader: g.add("LoadLatent", latent=name)


@pytest.mark.parametrize("sampler, expected", [
    ("FlowMatchSampler", "the latent has 4 channels, 16x16 but FlowMatch takes 3-channel latents"),
    ("KSampler", "4, 16, 16] but the model takes [B, 3, H, W] pixel-space images"),
])
def test_non_empty_4_channel_latent_is_refused_naming_both_sides(comfy_server, tiny, sampler, expected):
    latent = load_latent_file(comfy_server, "sd_4ch.latent", torch.randn(1, 4, 16, 16))
    message = execution_error(comfy_server, sampled_graph(tiny, latent, sampler=sampler))["exception_message"]
    assert expected in message, message


def test_latent_off_the_patch_grid_is_refused(comfy_server, tiny):
    latent = load_latent_file(comfy_server, "odd.latent", torch.randn(1, 3, 18, 18))
    message = execution_error(comfy_server, sampled_graph(tiny, latent))["exception_message"]
    assert "18x18" in message and "multiples of its patch size 4" in message, message


def test_video_latent_into_the_image_model_is_refused(comfy_server, tiny):
    latent = load_latent_file(comfy_server, "video.latent", torch.randn(1, 3, 2, 16, 16))
    message = execution_error(comfy_server, sampled_graph(tiny, latent))["exception_message"]
    assert "the latent is video (5-D)" in message, message


# -- the loader: files in the models folder ----------------------------------------------------

def loader_only(name):
    g = ng.Graph()
    loader = g.add("FlowMatchModelLoader", ckpt_name=name)
    g.add("SaveLatent", samples=ng.out(g.add("FlowMatchEmptyLatent", model=ng.out(loader), width=SIZE, height=SIZE,
                                             batch_size=1)), filename_prefix="loader")
    return g.prompt


def models_folder(server):
    folder = server.models_dir / "flow_matching"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_symlink_to_a_private_file_is_refused_without_quoting_it(comfy_server, tiny, tmp_path):
    secret = tmp_path / "private.txt"
    secret.write_bytes(b"SECRET-password-1234\n" * 4)
    link = models_folder(comfy_server) / "linked_secret.safetensors"
    link.symlink_to(secret)
    try:
        data = execution_error(comfy_server, loader_only(link.name))
    finally:
        link.unlink()  # the server is shared: leave its folder as other tests expect it
    message = data["exception_message"]
    assert message.startswith("FlowMatchModelLoader:") and "linked_secret.safetensors" in message, message
    assert "SECRET" not in message and "password" not in message and "not a safetensors file" in message


def test_symlink_to_a_valid_checkpoint_loads_and_samples(comfy_server, tiny):
    (models_folder(comfy_server) / "linked_tiny.safetensors").symlink_to(models_folder(comfy_server) / tiny)
    assert_next_prompt_runs(comfy_server, "linked_tiny.safetensors")


def test_pipe_in_the_models_folder_is_refused_not_waited_on(comfy_server, tiny):
    import os

    pipe = models_folder(comfy_server) / "pipe.safetensors"
    os.mkfifo(pipe)
    try:
        details = validation_error(comfy_server, loader_only(pipe.name))
    finally:
        pipe.unlink()
    assert "pipe.safetensors" in details and "not a regular file" in details, details
    assert_next_prompt_runs(comfy_server, tiny)


def rewritten(server, tiny, name, change):
    """A copy of the tiny checkpoint in the models folder with its header changed by `change`."""
    import json
    import struct

    raw = (models_folder(server) / tiny).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    change(header)
    text = json.dumps(header).encode()
    (models_folder(server) / name).write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    return name


def test_list_where_a_dtype_belongs_is_refused_naming_file_and_tensor(comfy_server, tiny):
    def change(header):
        header["dit.stem.0.weight"]["dtype"] = ["F32"]

    name = rewritten(comfy_server, tiny, "dtype_list.safetensors", change)
    message = execution_error(comfy_server, loader_only(name))["exception_message"]
    assert name in message and "tensor 'dit.stem.0.weight': dtype ['F32'] is not a safetensors dtype" in message


def test_width_of_a_million_is_refused_before_allocating(comfy_server, tiny):
    import json

    def change(header):
        config = json.loads(header["__metadata__"]["dit_config"])
        config["width"] = 10**6
        header["__metadata__"]["dit_config"] = json.dumps(config)

    name = rewritten(comfy_server, tiny, "wide.safetensors", change)
    message = execution_error(comfy_server, loader_only(name))["exception_message"]
    assert name in message and "dit_config width = 1000000 is outside 1..16384" in message, message
    assert_next_prompt_runs(comfy_server, tiny)


# -- limits are lifted (and lowered) by environment variables -----------------------------------

@pytest.fixture(scope="module")
def limited_server(start_comfy_server, tiny, comfy_server):
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FLOWMATCH_MAX_SCHEDULE_STEPS", "10")
        env.setenv("FLOWMATCH_MAX_TOKENS", "4096")
        server = start_comfy_server()
    ng.install(server, models_folder(comfy_server) / tiny)
    return server


def test_environment_lowers_the_schedule_limit(limited_server, tiny):
    details = validation_error(limited_server, sampled_graph(tiny, steps=8, denoise=0.5))
    assert "16-step schedule" in details and "the limit is 10" in details, details


def test_environment_lifts_the_token_limit(limited_server, tiny):
    entry = limited_server.run_prompt(sampled_graph(tiny, empty(256, 256), steps=1))
    assert entry["status"]["status_str"] == "success", ng.error_message(entry)


# -- text ---------------------------------------------------------------------------------------

def test_megabyte_prompt_encodes_with_a_short_note(comfy_server, tiny):
    g = ng.Graph()
    loader = g.add("FlowMatchModelLoader", ckpt_name=tiny)
    text = " ".join(f"w{i}" for i in range(150_000))  # ~1 MB, every word unknown to the model
    encode = g.add("FlowMatchTextEncode", clip=ng.out(loader, 1), text="a red circle " + text)
    g.add("SaveLatent", samples=ng.out(g.add("FlowMatchSampler", model=ng.out(loader), seed=0, steps=1, cfg=1.0,
                                             solver="euler", schedule="uniform", shift=3.0,
                                             positive=ng.out(encode), negative=ng.out(encode),
                                             latent_image=ng.out(empty(SIZE, SIZE)(g, loader)), denoise=1.0)),
          filename_prefix="long_prompt")
    entry = comfy_server.run_prompt(g.prompt)
    assert entry["status"]["status_str"] == "success", ng.error_message(entry)
    (note,) = entry["outputs"][encode]["text"]
    assert "'w0'" in note and "and 149988 more" in note and "dropped 149996" in note and len(note) < 1000, note
