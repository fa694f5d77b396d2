"""time_grid and the shift functions against diffusers' published formulas (written out
here independently) and their validation."""

import math

import numpy as np
import pytest
import torch

from comfyui_flowmatch.samplers import AURAFLOW_SHIFT, SD3_SHIFT, flux_mu, flux_shift, flux_tokens, grid_from_list, sd3_shift, time_grid

pytestmark = pytest.mark.unit


def diffusers_sd3_sigmas(steps, shift):
    # FlowMatchEulerDiscreteScheduler: sigmas = shift * s / (1 + (shift - 1) * s), then 0 appended.
    s = np.linspace(1.0, 1.0 / steps, steps)
    return np.append(shift * s / (1 + (shift - 1) * s), 0.0)


def diffusers_flux_sigmas(steps, image_seq_len):
    # FluxPipeline.calculate_shift + FlowMatchEulerDiscreteScheduler.time_shift (exponential, sigma=1).
    m = (1.15 - 0.5) / (4096 - 256)
    mu = image_seq_len * m + (0.5 - m * 256)
    s = np.linspace(1.0, 1.0 / steps, steps)
    return np.append(math.exp(mu) / (math.exp(mu) + (1 / s - 1) ** 1.0), 0.0)


def test_uniform_grid():
    assert torch.equal(time_grid(4), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64))


@pytest.mark.parametrize("steps", [1, 6, 28])
@pytest.mark.parametrize("shift", [SD3_SHIFT, AURAFLOW_SHIFT, 1.0, 0.5])
def test_sd3_shift_matches_diffusers(steps, shift):
    sigmas = 1 - time_grid(steps, shift=shift).numpy()
    assert np.allclose(sigmas, diffusers_sd3_sigmas(steps, shift), atol=1e-12)


@pytest.mark.parametrize("steps", [1, 4, 20])
@pytest.mark.parametrize("width, height", [(256, 256), (1024, 1024), (768, 1360), (2048, 2048)])
def test_flux_shift_matches_diffusers(steps, width, height):
    tokens = flux_tokens(width, height)
    assert tokens == (width // 16) * (height // 16)
    sigmas = 1 - time_grid(steps, mu=flux_mu(tokens)).numpy()
    assert np.allclose(sigmas, diffusers_flux_sigmas(steps, tokens), atol=1e-12)


def test_flux_mu_interpolates_between_the_published_end_points():
    assert flux_mu(256) == pytest.approx(0.5) and flux_mu(4096) == pytest.approx(1.15)
    assert flux_mu(flux_tokens(1024, 1024)) == pytest.approx(0.5 + 0.65 * (4096 - 256) / 3840)


def test_known_sd3_grid():
    expected = [1.0, 0.9375, 6 / 7, 0.75, 0.6, 0.375, 0.0]  # shift 3, 6 steps
    assert np.allclose(1 - time_grid(6, shift=3.0).numpy(), expected, atol=1e-12)


def test_flux_shift_is_sd3_shift_with_e_to_the_mu():
    s = torch.linspace(0, 1, 11, dtype=torch.float64)
    assert torch.allclose(flux_shift(s, 0.8), sd3_shift(s, math.exp(0.8)))


def test_user_lists():
    assert torch.equal(grid_from_list([0.0, 0.3, 1.0]), torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64))
    assert torch.allclose(grid_from_list([1.0, 0.5, 0.0], space="sigma"), torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    assert torch.equal(grid_from_list(torch.tensor([1.0, 0.0])), torch.tensor([1.0, 0.0], dtype=torch.float64))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: time_grid(0), "steps must be an int >= 1, got 0"),
        (lambda: time_grid(2.5), "got 2.5"),
        (lambda: time_grid(4, shift=0.0), "shift must be > 0, got 0.0"),
        (lambda: time_grid(4, shift=-1.0), "got -1.0"),
        (lambda: time_grid(4, shift=float("nan")), "shift must be a finite number, got nan"),
        (lambda: time_grid(4, mu=float("inf")), "mu must be a finite number, got inf"),
        (lambda: time_grid(4, shift=3.0, mu=1.0), "not both"),
        (lambda: flux_mu(0), "tokens must be > 0, got 0"),
        (lambda: flux_tokens(-8, 64), "-8x64"),
        (lambda: grid_from_list([0.0, 0.6, 0.4, 1.0]), "strictly monotonic"),
        (lambda: grid_from_list([0.0, 0.5, 1.5]), r"\[0, 1\], got \[0.0, 0.5, 1.5\]"),
        (lambda: grid_from_list([0.0, float("nan")]), "finite, got"),
        (lambda: grid_from_list([0.5]), "at least 2"),
        (lambda: grid_from_list([0.0, 1.0], space="time"), "'time'"),
    ],
)
def test_nonsense_raises_value_error_naming_the_value(call, match):
    with pytest.raises(ValueError, match=match):
        call()
