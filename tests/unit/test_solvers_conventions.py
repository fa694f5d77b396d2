"""The seed <-> ComfyUI conversions, checked on an exact straight-line path."""

import pytest
import torch

from comfyui_flowmatch.samplers import (
    comfy_from_velocity,
    data_from_velocity,
    denoised_from_velocity,
    sigma_from_t,
    t_from_sigma,
    velocity_from_comfy,
    velocity_from_denoised,
)

pytestmark = pytest.mark.unit

GEN = torch.Generator().manual_seed(0)
NOISE, DATA = torch.randn(3, 2, 4, 4, generator=GEN, dtype=torch.float64), torch.randn(3, 2, 4, 4, generator=GEN, dtype=torch.float64)
T = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)


def test_time_and_sigma():
    assert sigma_from_t(0.0) == 1.0 and t_from_sigma(0.0) == 1.0
    assert torch.allclose(t_from_sigma(sigma_from_t(T)), T, rtol=0, atol=1e-15)


def test_seed_path_against_comfyui_path():
    x_seed = (1 - T.view(-1, 1, 1, 1)) * NOISE + T.view(-1, 1, 1, 1) * DATA
    sigma = sigma_from_t(T)
    x_comfy = (1 - sigma.view(-1, 1, 1, 1)) * DATA + sigma.view(-1, 1, 1, 1) * NOISE  # ComfyUI's noise_scaling
    assert torch.allclose(x_seed, x_comfy)
    v = DATA - NOISE
    comfy_output = NOISE - DATA  # what a ComfyUI/diffusers flow model predicts
    assert torch.equal(velocity_from_comfy(comfy_output), v) and torch.equal(comfy_from_velocity(v), comfy_output)
    denoised = x_comfy - sigma.view(-1, 1, 1, 1) * comfy_output  # ComfyUI's CONST calculate_denoised
    assert torch.allclose(denoised, DATA)
    assert torch.allclose(velocity_from_denoised(x_seed, denoised, sigma), v)
    assert torch.allclose(denoised_from_velocity(x_seed, v, sigma), DATA)
    assert torch.allclose(data_from_velocity(x_seed, v, T), DATA)
    assert torch.allclose(data_from_velocity(x_seed[:1], v[:1], 0.2), DATA[:1])
