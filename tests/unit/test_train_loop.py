"""Training: the loss goes down on a tiny config, runs are deterministic, resume is exact."""

import json

import pytest
import torch

from comfyui_flowmatch.models.checkpoint import load_checkpoint
from comfyui_flowmatch.models.data import ShapesDataset
from comfyui_flowmatch.models.dit import DiTConfig
from comfyui_flowmatch.models.text import TextConfig, Tokenizer
from comfyui_flowmatch.models.train import (
    TrainConfig, learning_rate, load_train_state, main, new_run, sample_t, save_train_state, train_step,
)

pytestmark = pytest.mark.unit

DIT = DiTConfig(image_size=16, patch=4, width=32, depth=1, heads=2, text_dim=16, conv_channels=8)


def tiny_run(config: TrainConfig):
    dataset = ShapesDataset(seed=config.seed, size=16)
    tokenizer = Tokenizer.from_captions(dataset.vocabulary_captions())
    text = TextConfig(vocab_size=len(tokenizer.vocab), dim=16, depth=1, heads=2)
    return new_run(DIT, text, tokenizer, config, torch.device("cpu")), dataset


def losses(config: TrainConfig, steps: int) -> list[float]:
    run, dataset = tiny_run(config)
    return [train_step(run, dataset, config, torch.device("cpu")) for _ in range(steps)]


def test_a_few_steps_lower_the_loss_deterministically():
    config = TrainConfig(steps=40, batch_size=16, lr=3e-3, warmup=5, seed=0)
    first = losses(config, 40)
    assert sum(first[-5:]) / 5 < 0.85 * sum(first[:5]) / 5
    assert losses(config, 40) == first


def test_resume_continues_exactly(tmp_path):
    config = TrainConfig(steps=6, batch_size=8, warmup=2, seed=1)
    straight = losses(config, 6)
    run, dataset = tiny_run(config)
    head = [train_step(run, dataset, config, torch.device("cpu")) for _ in range(3)]
    save_train_state(run, tmp_path / "state.safetensors", {"train_config": "{}"})
    resumed, _ = tiny_run(config)
    load_train_state(resumed, tmp_path / "state.safetensors")
    tail = [train_step(resumed, dataset, config, torch.device("cpu")) for _ in range(3)]
    assert head + tail == pytest.approx(straight, rel=1e-5)


def test_learning_rate_warms_up_then_decays_to_the_floor():
    config = TrainConfig(steps=100, lr=1e-3, warmup=10, min_lr_ratio=0.1)
    lrs = [learning_rate(s, config) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert learning_rate(100, config) == pytest.approx(1e-4)


def test_logit_normal_t_concentrates_in_the_middle():
    g = torch.Generator().manual_seed(0)
    uniform, logit = sample_t(20000, "uniform", g), sample_t(20000, "logit_normal", g)
    middle = lambda t: ((t > 0.25) & (t < 0.75)).float().mean().item()  # noqa: E731
    assert 0 < logit.min() and logit.max() < 1 and middle(logit) > middle(uniform) + 0.1


@pytest.mark.parametrize("field, value, message", [
    ("t_sampling", "cosine", "t_sampling must be one of"), ("lr", 0.0, "lr must be > 0, got 0.0"),
    ("ema_decay", 1.0, "ema_decay"), ("steps", 0, "steps must be >= 1, got 0"),
])
def test_config_validation(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value})


def test_cli_writes_a_loadable_checkpoint_and_log(tmp_path):
    out = tmp_path / "model.safetensors"
    main(["--output", str(out), "--run-dir", str(tmp_path / "run"), "--steps", "4", "--batch-size", "4",
          "--save-every", "2", "--sample-every", "1000", "--dit-image-size", "16", "--dit-width", "32",
          "--dit-depth", "1", "--dit-heads", "2", "--dit-conv-channels", "8", "--text-dim", "16",
          "--text-depth", "1", "--text-heads", "2"])
    bundle = load_checkpoint(out)
    assert bundle.metadata["training"]["steps"] == 4 and bundle.metadata["training"]["data"] == "shapes"
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == []  # log_every 25 > 4 steps
