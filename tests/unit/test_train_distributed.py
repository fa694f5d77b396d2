"""`models.train` under torchrun: 2 gloo processes step exactly like 1 process with the same global
batch, and a killed 2-process run resumes to the same weights."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors import safe_open

pytestmark = pytest.mark.unit

STEPS = 12
TINY = ["--steps", str(STEPS), "--batch-size", "8", "--warmup", "3", "--lr", "3e-3", "--save-every", "2",
        "--sample-every", "100000", "--dit-image-size", "16", "--dit-width", "32", "--dit-depth", "1",
        "--dit-heads", "2", "--dit-conv-channels", "8", "--text-dim", "16", "--text-depth", "1", "--text-heads", "2",
        "--threads", "1", "--device", "cpu"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def command(run_dir, processes: int, *extra: str) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    if processes == 1:
        launcher = [sys.executable]
    return [*launcher, "-m", "comfyui_flowmatch.models.train", "--output", str(run_dir / "model.safetensors"),
            "--run-dir", str(run_dir), *TINY, *extra]


def train(run_dir, processes: int, *extra: str) -> None:
    result = subprocess.run(command(run_dir, processes, *extra), env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def weights(run_dir) -> tuple[int, dict[str, torch.Tensor]]:
    with safe_open(str(run_dir / "train_state.safetensors"), framework="pt") as f:
        step = int(f.metadata()["step"])
        return step, {k: f.get_tensor(k) for k in f.keys() if k.startswith(("model.", "ema."))}


def assert_same_weights(a, b):
    """fp32 tolerance: summation order differs across ranks, and Adam magnifies the rounding noise
    of gradients that are zero in exact arithmetic (attention key biases) to ~1e-6."""
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("single")
    train(run_dir, 1)
    return weights(run_dir)


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(single, tmp_path):
    train(tmp_path, 2)
    step, two = weights(tmp_path)
    assert step == single[0] == STEPS
    assert_same_weights(two, single[1])
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 0  # log_every 25 > steps; rank 0 only
    initial = weights_at_init()
    assert max((two[k] - v).abs().max().item() for k, v in initial.items()) > 1e-2  # training moved the weights


def weights_at_init() -> dict[str, torch.Tensor]:
    from comfyui_flowmatch.models.data import ShapesDataset
    from comfyui_flowmatch.models.dit import DiTConfig
    from comfyui_flowmatch.models.text import TextConfig, Tokenizer
    from comfyui_flowmatch.models.train import TrainConfig, new_run

    tokenizer = Tokenizer.from_captions(ShapesDataset(size=16).vocabulary_captions())
    run = new_run(DiTConfig(image_size=16, width=32, depth=1, heads=2, text_dim=16, conv_channels=8),
                  TextConfig(vocab_size=len(tokenizer.vocab), dim=16, depth=1, heads=2), tokenizer,
                  TrainConfig(), torch.device("cpu"))
    return {f"model.dit.{k}": v for k, v in run.dit.state_dict().items()}


def test_a_killed_two_process_run_resumes_to_the_same_weights(single, tmp_path):
    process = subprocess.Popen(command(tmp_path, 2), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    state = tmp_path / "train_state.safetensors"
    deadline = time.monotonic() + 300
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed_at, _ = weights(tmp_path)
    assert 2 <= killed_at < STEPS, "the run finished before it could be killed"
    train(tmp_path, 2, "--resume")
    step, resumed = weights(tmp_path)
    assert step == STEPS
    assert_same_weights(resumed, single[1])


def tiny_teacher(path) -> None:
    from comfyui_flowmatch.models.checkpoint import save_checkpoint
    from comfyui_flowmatch.models.data import ShapesDataset
    from comfyui_flowmatch.models.dit import DiTConfig, FlowDiT
    from comfyui_flowmatch.models.text import TextConfig, TextEncoder, Tokenizer

    torch.manual_seed(0)
    tokenizer = Tokenizer.from_captions(ShapesDataset(size=16).vocabulary_captions())
    dit = FlowDiT(DiTConfig(image_size=16, width=32, depth=1, heads=2, text_dim=16, conv_channels=8, prediction="data"))
    text = TextEncoder(TextConfig(vocab_size=len(tokenizer.vocab), dim=16, depth=1, heads=2))
    for p in [*dit.parameters(), *text.parameters()]:
        torch.nn.init.normal_(p, std=0.05)
    save_checkpoint(path, dit, text, tokenizer, {"steps": 0}, dtype=torch.float32)


def test_reflow_under_torchrun_splits_the_pairs_and_matches_one_process(tmp_path):
    teacher = tmp_path / "teacher.safetensors"
    tiny_teacher(teacher)
    for processes in (1, 2):
        run_dir = tmp_path / f"run{processes}"
        launcher = [sys.executable] if processes == 1 else \
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        result = subprocess.run(
            [*launcher, "-m", "comfyui_flowmatch.models.reflow", "--teacher", str(teacher),
             "--output", str(run_dir / "student.safetensors"), "--run-dir", str(run_dir), "--pairs", "16",
             "--shard-size", "4", "--teacher-steps", "2", "--steps", "6", "--batch-size", "8", "--warmup", "1",
             "--save-every", "3", "--sample-every", "100000", "--threads", "1", "--device", "cpu"],
            env=ENV, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "run2" / "pairs").iterdir()) == [f"pairs_0000{k}.safetensors" for k in range(4)]
    assert_same_weights(weights(tmp_path / "run2")[1], weights(tmp_path / "run1")[1])
