"""What a user sees while and before sampling, over HTTP and the websocket: one progress
message per step, latent previews, /interrupt within a step, and bad model files or names
refused with specific errors."""

import importlib.util
import pickle
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

_spec = importlib.util.spec_from_file_location("node_graphs", Path(__file__).with_name("node_graphs.py"))
ng = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ng)

SIZE = 16


@pytest.fixture(scope="module")
def tiny(comfy_server, tmp_path_factory):
    return ng.install_tiny_flowmatch(comfy_server, tmp_path_factory.mktemp("tiny_runtime"), "tiny_runtime.safetensors")


@pytest.fixture
def events(comfy_server):
    recorder = ng.EventRecorder(comfy_server)
    yield recorder
    recorder.close()


def queue(server, prompt, client_id):
    status, body = server.post_json("/prompt", {"prompt": prompt, "client_id": client_id})
    assert status == 200, body
    return body["prompt_id"]


def sampler_graph(ckpt, steps, solver="euler", seed=0):
    g = ng.Graph()
    save = ng.text_to_image(g, ckpt, "a red circle", size=SIZE, steps=steps, solver=solver, seed=seed,
                            prefix="runtime")
    sampler = next(k for k, v in g.prompt.items() if v["class_type"] == "FlowMatchSampler")
    return g, sampler, save


@pytest.mark.parametrize("solver", ["euler", "rk4", "dopri5", "flow_reuse"])
def test_one_progress_message_per_step_and_previews(comfy_server, tiny, events, solver):
    steps = 5
    g, sampler, _ = sampler_graph(tiny, steps, solver)
    prompt_id = queue(comfy_server, g.prompt, events.client_id)
    assert events.done.wait(120)
    progress = [e for e in events.of("progress", prompt_id) if e["node"] == sampler]
    assert [(e["value"], e["max"]) for e in progress] == [(i, steps) for i in range(1, steps + 1)]
    assert events.of("execution_success", prompt_id)
    assert events.binary_frames >= steps, "no latent preview images arrived"


def test_ode_sampler_node_shows_each_runs_counts(comfy_server, tiny, events):
    g = ng.Graph()
    loader = g.add("FlowMatchModelLoader", ckpt_name=tiny)
    model = ng.out(loader)
    pos, neg = (g.add("FlowMatchTextEncode", clip=ng.out(loader, 1), text=text) for text in ("a red circle", ""))
    latent = g.add("FlowMatchEmptyLatent", model=model, width=SIZE, height=SIZE, batch_size=1)
    sigmas = g.add("FlowMatchScheduler", model=model, schedule="model default", steps=3, shift=3.0, denoise=1.0,
                   width=SIZE, height=SIZE)
    sampler = g.add("FlowMatchODESampler", solver="heun")
    guider = g.add("CFGGuider", model=model, positive=ng.out(pos), negative=ng.out(neg), cfg=2.0)
    noise = g.add("RandomNoise", noise_seed=0)
    sampled = g.add("SamplerCustomAdvanced", noise=ng.out(noise), guider=ng.out(guider), sampler=ng.out(sampler),
                    sigmas=ng.out(sigmas), latent_image=ng.out(latent))
    g.add("SaveLatent", samples=ng.out(sampled), filename_prefix="ode_counts")
    prompt_id = queue(comfy_server, g.prompt, events.client_id)
    assert events.done.wait(120) and events.of("execution_success", prompt_id)
    # heun over 3 steps ending at sigma 0: 2 + 2 + 1 (Euler last step) model calls
    assert (sampler, "heun: 5 model evaluations (NFE), 3 steps accepted, 0 rejected") in events.texts


def test_interrupt_ends_the_prompt_within_one_step_and_the_next_runs(comfy_server, tiny, events):
    steps = 400
    g, sampler, _ = sampler_graph(tiny, steps, "rk4", seed=1)
    prompt_id = queue(comfy_server, g.prompt, events.client_id)
    deadline = time.monotonic() + 120
    while not any(e["node"] == sampler for e in events.of("progress", prompt_id)):
        assert time.monotonic() < deadline, "sampling never started"
        time.sleep(0.02)
    status, _ = comfy_server.post_json("/interrupt", {})
    assert status == 200
    seen_at_interrupt = len(events.of("progress", prompt_id))
    assert events.done.wait(60)
    interrupted = events.of("execution_interrupted", prompt_id)
    assert interrupted and interrupted[0]["node_type"] == "FlowMatchSampler"
    assert len(events.of("progress", prompt_id)) <= seen_at_interrupt + 1
    assert events.of("progress", prompt_id)[-1]["value"] < steps

    g, _, save = sampler_graph(tiny, 2, seed=2)
    entry = comfy_server.run_prompt(g.prompt)
    assert entry["status"]["status_str"] == "success", ng.error_message(entry)


def loader_graph(name):
    g = ng.Graph()
    loader = g.add("FlowMatchModelLoader", ckpt_name=name)
    g.add("SaveLatent", samples=ng.out(g.add("FlowMatchEmptyLatent", model=ng.out(loader), width=SIZE, height=SIZE,
                                             batch_size=1)), filename_prefix="loader")
    return g.prompt


def test_pickle_renamed_safetensors_is_refused_unopened(comfy_server, tmp_path):
    source = tmp_path / "renamed_pickle.safetensors"
    source.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    name = ng.install(comfy_server, source)
    entry = comfy_server.run_prompt(loader_graph(name))
    message = ng.error_message(entry)
    assert entry["status"]["status_str"] == "error"
    assert message.startswith("FlowMatchModelLoader:") and name in message and "pickle" in message, message


def test_truncated_file_is_refused(comfy_server, tiny, tmp_path):
    data = (comfy_server.models_dir / "flow_matching" / tiny).read_bytes()
    source = tmp_path / "truncated.safetensors"
    source.write_bytes(data[: len(data) // 2])
    name = ng.install(comfy_server, source)
    entry = comfy_server.run_prompt(loader_graph(name))
    message = ng.error_message(entry)
    assert entry["status"]["status_str"] == "error"
    assert name in message and "truncated" in message, message


@pytest.mark.parametrize("name", ["../models/flow_matching/tiny_runtime.safetensors", "../../etc/passwd",
                                  "no_such_model.safetensors"])
def test_unlisted_names_are_rejected_at_queue_time(comfy_server, tiny, name):
    status, body = comfy_server.post_json("/prompt", {"prompt": loader_graph(name)})
    assert status == 400, body
    (node_errors,) = body["node_errors"].values()
    error = node_errors["errors"][0]
    assert error["type"] == "custom_validation_failed"
    assert "FlowMatchModelLoader" in error["details"] and "not a checkpoint" in error["details"], error


def test_unknown_solver_is_rejected_at_queue_time(comfy_server, tiny):
    g, sampler, _ = sampler_graph(tiny, 2)
    g.prompt[sampler]["inputs"]["solver"] = "rk45"
    status, body = comfy_server.post_json("/prompt", {"prompt": g.prompt})
    assert status == 400, body
    assert "solver 'rk45' is not one of" in body["node_errors"][sampler]["errors"][0]["details"]
