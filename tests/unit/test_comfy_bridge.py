"""sample_flow driven the way ComfyUI drives a sampler, with an exact denoiser built from the
closed-form Gaussian flow: D(x, sigma) = x + sigma * v(x, 1 - sigma)."""

import math

import pytest
import torch

from comfyui_flowmatch.samplers import sample_flow, time_grid
from comfyui_flowmatch.samplers.bench import gaussian_flow

pytestmark = pytest.mark.unit

FLOW = gaussian_flow()
NOISE = torch.randn(2, 4, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
EXACT = FLOW.at(NOISE, 1.0)


class Denoiser:
    """ComfyUI's sampler-side model: model(x, sigma [B], **extra_args) -> data estimate."""

    def __init__(self):
        self.sigmas = []

    def __call__(self, x, sigma, **extra_args):
        assert sigma.shape == (x.shape[0],) and sigma.dtype == x.dtype
        assert float(sigma.min()) > 0, "evaluated at sigma = 0"
        self.sigmas.append(float(sigma[0]))
        return x + sigma.reshape(-1, 1, 1, 1) * FLOW.velocity(x, 1 - sigma)


def sigmas(steps):
    return 1 - time_grid(steps)


@pytest.mark.parametrize("method, min_order", [("euler", 0.9), ("midpoint", 1.8), ("heun", 1.8), ("rk3", 2.7), ("rk4", 3.5)])
def test_order_survives_the_last_step_to_sigma_zero(method, min_order):
    errors = [float((sample_flow(Denoiser(), NOISE, sigmas(n), method=method) - EXACT).abs().max()) for n in (16, 32, 64)]
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert min(orders) >= min_order, orders


@pytest.mark.parametrize("method, calls", [("euler", 8), ("midpoint", 16), ("heun", 15), ("rk3", 24), ("rk4", 31)])
def test_velocity_calls_are_honest_and_never_at_sigma_zero(method, calls):
    model, seen = Denoiser(), []
    sample_flow(model, NOISE, sigmas(8), method=method, on_solution=seen.append)
    assert len(model.sigmas) == seen[0].nfe == calls
    assert (seen[0].accepted, seen[0].rejected) == (8, 0)


def test_without_sigma_zero_the_method_runs_unchanged():
    model = Denoiser()
    sample_flow(model, NOISE, torch.linspace(1.0, 0.2, 5, dtype=torch.float64), method="heun")
    assert len(model.sigmas) == 8 and model.sigmas[-1] == pytest.approx(0.2)


@pytest.mark.parametrize("steps", [1, 8, 40])
def test_dopri5_meets_tolerance_at_any_step_count_and_reports_every_sigma(steps):
    model, seen, reports = Denoiser(), [], []
    x = sample_flow(model, NOISE, sigmas(steps), method="dopri5", on_solution=seen.append, callback=reports.append, rtol=1e-8, atol=1e-8)
    # The closing step to sigma = 0 from the floor 1e-3 costs O(floor * dD/dsigma).
    assert float((x - EXACT).abs().max()) < 1e-3
    assert len(model.sigmas) == seen[0].nfe and min(model.sigmas) > 0
    assert seen[0].accepted > 2 and seen[0].rejected >= 0  # its own steps, not the requested ones
    assert [d["i"] for d in reports] == list(range(steps))
    for d, sigma in zip(reports, sigmas(steps)):
        exact = FLOW.at(NOISE, 1 - float(sigma))
        assert float(d["sigma"]) == pytest.approx(float(sigma)) and float((d["x"] - exact).abs().max()) < 1e-5


def test_callback_carries_the_keys_comfyui_reads():
    seen = []
    steps = sigmas(4)
    x = NOISE.float()
    sample_flow(Denoiser(), x, steps.float(), callback=seen.append, method="heun")
    assert [d["i"] for d in seen] == [0, 1, 2, 3]
    for d, sigma in zip(seen, steps[:-1]):
        assert set(d) == {"i", "x", "denoised", "sigma", "sigma_hat"}
        assert float(d["sigma"]) == pytest.approx(float(sigma)) and d["sigma_hat"] is d["sigma"]
        assert d["x"].dtype == d["denoised"].dtype == x.dtype
        expected = d["x"] + float(sigma) * FLOW.velocity(d["x"].double(), torch.full((2,), 1 - float(sigma), dtype=torch.float64)).float()
        assert torch.allclose(d["denoised"], expected, atol=1e-5)


def test_extra_args_reach_the_model():
    got = []

    def model(x, sigma, **extra_args):
        got.append(extra_args)
        return torch.zeros_like(x)

    sample_flow(model, NOISE, sigmas(2), extra_args={"seed": 3, "model_options": {}})
    assert got == [{"seed": 3, "model_options": {}}] * 2


def test_edge_cases():
    assert sample_flow(Denoiser(), NOISE, torch.tensor([1.0])) is NOISE
    with pytest.raises(ValueError, match="sigmas\\[0\\] must be > 0"):
        sample_flow(Denoiser(), NOISE, torch.tensor([0.0, 0.5]))
    with pytest.raises(ValueError, match="'lms'"):
        sample_flow(Denoiser(), NOISE, sigmas(2), method="lms")


def test_sampling_records_no_autograd_graph():
    weight = torch.nn.Parameter(torch.tensor(0.5, dtype=torch.float64))

    def model(x, sigma, **extra_args):
        return Denoiser()(x, sigma) * weight * 2

    x = sample_flow(model, NOISE, sigmas(3), method="flow_2m")
    assert not x.requires_grad and x.grad_fn is None
