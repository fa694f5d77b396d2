"""Log-likelihood by the instantaneous change of variables, against a closed-form Gaussian flow."""

import math

import pytest
import torch

from comfyui_flowmatch.samplers.likelihood import bits_per_dim, log_likelihood

pytestmark = pytest.mark.unit

MU = torch.tensor([0.5, -1.0, 2.0, 0.0, 0.3, -0.7], dtype=torch.float64)
SIGMA = torch.tensor([0.3, 1.5, 0.8, 2.0, 0.5, 1.0], dtype=torch.float64)


def gaussian_flow(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The marginal flow-matching velocity from N(0, I) at t=0 to N(MU, diag SIGMA²) at t=1 with
    x_t = (1 - t) x0 + t x1: p_t = N(t MU, s_t²), s_t² = (1 - t)² + t² SIGMA², and
    v = MU + (t SIGMA² - (1 - t)) / s_t² · (x - t MU)."""
    t = t.view(-1, 1)
    s2 = (1 - t) ** 2 + t**2 * SIGMA**2
    return MU + (t * SIGMA**2 - (1 - t)) / s2 * (x - t * MU)


def analytic_log_density(x: torch.Tensor) -> torch.Tensor:
    z = (x - MU) / SIGMA
    return (-0.5 * z.pow(2) - torch.log(SIGMA) - 0.5 * math.log(2 * math.pi)).sum(1)


def data(n: int, seed: int) -> torch.Tensor:
    return MU + SIGMA * torch.randn(n, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def test_exact_divergence_matches_the_analytic_density_to_1e_3_nats_per_dim():
    x1 = data(16, 0)
    result = log_likelihood(lambda x, t: gaussian_flow(t, x), x1, steps=64, method="rk4", divergence="exact")
    error_per_dim = (result.log_p - analytic_log_density(x1)).abs() / 6
    assert error_per_dim.max() < 1e-3
    assert (result.std_error == 0).all()
    # the path reaches the noise the forward map came from: x0 = (x1 - MU) / SIGMA for this flow
    torch.testing.assert_close(result.x0, (x1 - MU) / SIGMA, rtol=1e-5, atol=1e-5)


def test_hutchinson_is_exact_for_a_diagonal_jacobian():
    """Rademacher probes have z_i² = 1, so a diagonal Jacobian's trace comes out exactly (zero variance)."""
    x1 = data(8, 1)
    result = log_likelihood(lambda x, t: gaussian_flow(t, x), x1, steps=64, method="rk4", divergence="hutchinson",
                            probes=4, generator=torch.Generator().manual_seed(2))
    assert ((result.log_p - analytic_log_density(x1)).abs() / 6).max() < 1e-3
    assert result.std_error.max() < 1e-9


def rotated_flow(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The Gaussian flow in rotated coordinates (same density up to the rotation): a full Jacobian."""
    q = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(9)))[0]
    return gaussian_flow(t, x @ q) @ q.T


def test_hutchinson_is_unbiased_within_its_stated_error_on_a_mixing_flow():
    q = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(9)))[0]
    x1 = data(6, 3) @ q.T
    exact = analytic_log_density(x1 @ q)
    result = log_likelihood(rotated_flow, x1, steps=32, method="rk4", divergence="hutchinson", probes=48,
                            generator=torch.Generator().manual_seed(4))
    assert (result.std_error > 1e-3).all()
    z_scores = (result.log_p - exact) / result.std_error
    assert z_scores.abs().max() < 4.5
    assert z_scores.abs().mean() < 2.0  # not a vacuously huge error bar


def test_bits_per_dim_of_a_uniform_density_is_8_bits():
    dims = 10
    log_p = torch.tensor([dims * math.log(1 / 2)], dtype=torch.float64)  # uniform on [-1, 1]^D
    assert bits_per_dim(log_p, dims).item() == pytest.approx(8 - math.log2(256 / 255), abs=1e-12)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="divergence"):
        log_likelihood(lambda x, t: x, torch.zeros(1, 2), divergence="skilling")
    with pytest.raises(ValueError, match="probes"):
        log_likelihood(lambda x, t: x, torch.zeros(1, 2), divergence="hutchinson", probes=1)
