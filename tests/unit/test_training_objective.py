"""Pins the training objective: x_t = (1 - t) noise + t data, target v = data - noise, t = 0 noise.

With data fixed at one image c, x_t determines the noise, so the objective has an exact
minimiser v*(x, t) = (c - x) / (1 - t) with zero loss. Flipping the target's sign (noise - data)
or the time convention (t = 0 data) moves the minimiser, and both tests below fail.
"""

import pytest
import torch

from comfyui_flowmatch.models.text import Tokenizer
from comfyui_flowmatch.models.train import EMA, Run, TrainConfig, flow_matching_loss, train_step

pytestmark = pytest.mark.unit

C = torch.linspace(-0.8, 0.8, 3 * 4 * 4).reshape(1, 3, 4, 4)


def seed_minimiser(ids, x, t):
    return (C - x) / (1 - t).view(-1, 1, 1, 1)


def test_the_closed_form_minimiser_has_zero_loss_and_wrong_conventions_do_not():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(64, 3, 4, 4, generator=g)
    t = torch.rand(64, generator=g) * 0.9
    data = C.expand(64, -1, -1, -1)
    ids = torch.zeros(64, 1, dtype=torch.long)
    assert flow_matching_loss(seed_minimiser, ids, data, noise, t).item() < 1e-10
    flipped_sign = lambda ids, x, t: -seed_minimiser(ids, x, t)  # noqa: E731 (minimiser of noise - data)
    flipped_time = lambda ids, x, t: (x - C) / t.view(-1, 1, 1, 1)  # noqa: E731 (t = 0 data, v = data - noise)
    assert flow_matching_loss(flipped_sign, ids, data, noise, t).item() > 1.0
    assert flow_matching_loss(flipped_time, ids, data, noise, t).item() > 1.0


class DataEstimate(torch.nn.Module):
    """v = (d - x) / (1 - t) with d = alpha * C + beta * x: the seed minimiser is alpha = 1, beta = 0."""

    def __init__(self):
        super().__init__()
        self.alpha = torch.nn.Parameter(torch.zeros(()))
        self.beta = torch.nn.Parameter(torch.zeros(()))

    def forward(self, ids, x, t):
        return (self.alpha * C + self.beta * x - x) / (1 - t).clamp(min=0.05).view(-1, 1, 1, 1)


class OneImage:
    def batch(self, step, batch_size):
        return ((C + 1) / 2).expand(batch_size, -1, -1, -1), ["a"] * batch_size


def test_the_trainer_converges_to_the_seed_minimiser():
    config = TrainConfig(steps=300, batch_size=32, lr=0.05, warmup=1, weight_decay=0.0, caption_dropout=0.0,
                         t_sampling="logit_normal", ema_decay=0.5)
    model = DataEstimate()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    run = Run(model, torch.nn.Identity(), Tokenizer.from_captions(["a"]), optimizer, EMA([model], 0.5), model)
    for _ in range(config.steps):
        train_step(run, OneImage(), config, torch.device("cpu"))
    assert model.alpha.item() == pytest.approx(1.0, abs=0.03)
    assert model.beta.item() == pytest.approx(0.0, abs=0.03)


def test_data_weighting_is_the_error_of_the_data_estimate():
    g = torch.Generator().manual_seed(3)
    noise, data = torch.randn(32, 3, 4, 4, generator=g), torch.randn(32, 3, 4, 4, generator=g)
    t = torch.rand(32, generator=g) * 0.9
    ids = torch.zeros(32, 1, dtype=torch.long)
    some_field = lambda ids, x, t: 0.3 * x - C  # noqa: E731
    x_t = (1 - t.view(-1, 1, 1, 1)) * noise + t.view(-1, 1, 1, 1) * data
    estimate = x_t + (1 - t.view(-1, 1, 1, 1)) * some_field(ids, x_t, t)
    expected = (estimate - data).pow(2).mean()
    assert flow_matching_loss(some_field, ids, data, noise, t, "data").item() == pytest.approx(expected.item(), rel=1e-5)
    assert flow_matching_loss(seed_minimiser, ids, C.expand(32, -1, -1, -1), noise, t, "data").item() < 1e-10
