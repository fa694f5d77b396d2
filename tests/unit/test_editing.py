"""samplers.editing against the closed-form Gaussian flow: inversion recovers the exact noise,
round trips converge at each solver's order, FlowEdit between two Gaussians is the exact
translation by the difference of their means (the noise cancels, see the derivation below),
and the re-noised update approaches it by the closed-form contraction."""

import math

import pytest
import torch

from comfyui_flowmatch.samplers.editing import EditStats
from comfyui_flowmatch.samplers.bench import GaussianFlow, gaussian_flow
from comfyui_flowmatch.samplers.editing import (
    FIREFLOW,
    INVERSION_METHODS,
    edit_window,
    flow_edit,
    integrate_reuse_midpoint,
    invert,
    regenerate,
)

pytestmark = pytest.mark.unit

FLOW = gaussian_flow()
NOISE = torch.randn(2, 4, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
DATA = FLOW.at(NOISE, 1.0)


def uniform(steps):
    return torch.linspace(0, 1, steps + 1, dtype=torch.float64)


def inversion_error(method, steps):
    return float((invert(FLOW.velocity, DATA, uniform(steps), method) - NOISE).abs().max())


@pytest.mark.parametrize("method", INVERSION_METHODS)
def test_inversion_recovers_the_exact_noise(method):
    steps = 4 if method == "dopri5" else 64
    tolerance = {"euler": 0.15, "midpoint": 3e-3, "heun": 3e-3, FIREFLOW: 3e-3, "dopri5": 1e-3}.get(method, 1e-4)
    assert inversion_error(method, steps) < tolerance


@pytest.mark.parametrize("method, min_order", [("euler", 0.9), ("midpoint", 1.8), ("rk4", 3.5), (FIREFLOW, 1.8)])
def test_round_trip_error_falls_at_the_solver_order(method, min_order):
    errors = []
    for steps in (16, 32, 64):
        ts = uniform(steps)
        back = regenerate(FLOW.velocity, invert(FLOW.velocity, DATA, ts, method), ts, method)
        errors.append(float((back - DATA).abs().max()))
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert min(orders) >= min_order, (errors, orders)


def test_fireflow_makes_one_call_per_step_plus_one():
    stats = EditStats()
    integrate_reuse_midpoint(FLOW.velocity, NOISE, uniform(9), stats=stats)
    assert stats.nfe == 10 and stats.accepted == 9


def test_inversion_wants_the_generation_grid_and_a_known_method():
    with pytest.raises(ValueError, match="ascending generation grid"):
        invert(FLOW.velocity, DATA, torch.flip(uniform(4), (0,)))
    with pytest.raises(ValueError, match="method must be one of"):
        invert(FLOW.velocity, DATA, uniform(4), "ddim")


def noise_source(seed=1):
    generator = torch.Generator().manual_seed(seed)
    return lambda: torch.randn(DATA.shape, dtype=DATA.dtype, generator=generator)


def test_flow_edit_with_the_same_prompt_returns_the_source():
    edited = flow_edit(FLOW.velocity, FLOW.velocity, DATA, uniform(10), noise_source(), n_max=8, n_avg=2)
    assert torch.allclose(edited, DATA, rtol=0, atol=1e-12)


@pytest.mark.parametrize("steps, n_avg", [(3, 1), (12, 2)])
def test_flow_edit_between_gaussians_translates_by_the_mean_difference(steps, n_avg):
    # v(x, t) = mu + k(t) (x - t mu) with k = sigma_t'/sigma_t for both flows (same scale), so
    # v_tar(Z_tar) - v_src(Z_src) = d (1 - k t) + k (Z - x_src) with d = mu_tar - mu_src, the noise
    # cancels, and D = Z - x_src - t d obeys dD/dt = k D: D stays 0 even under Euler, so the edit
    # from t = 0 ends at x_src + d for any step count.
    target = GaussianFlow(FLOW.mean + torch.linspace(0.5, -1.0, 4, dtype=torch.float64).reshape(1, 4, 1, 1), FLOW.scale)
    stats = EditStats()
    edited = flow_edit(FLOW.velocity, target.velocity, DATA, uniform(steps), noise_source(), n_max=steps, n_avg=n_avg,
                       stats=stats)
    assert torch.allclose(edited, DATA + target.mean - FLOW.mean, atol=1e-12)
    assert stats.nfe == 2 * n_avg * steps


@pytest.mark.parametrize("data_bound", [None, 2.0, 0.1])
def test_renoised_flow_edit_with_the_same_prompt_returns_the_source(data_bound):
    edited = flow_edit(FLOW.velocity, FLOW.velocity, DATA, uniform(10), noise_source(), n_max=5, n_avg=2,
                       relaxation=0.5, data_bound=data_bound)
    assert torch.equal(edited, DATA)


def constant_prediction(image):
    """A velocity whose data prediction z + (1 - t) v is `image` wherever it is asked."""
    return lambda z, t: (image - z) / (1 - t.view(-1, 1, 1, 1))


def test_data_bound_clips_both_predictions_to_the_source_scale():
    # Image 0 peaks at |x| = 1 (bound 2 at data_bound 2), image 1 at 0.5 (bound 1). With
    # constant predictions each step moves Z a fraction lam of the way to
    # x_src + clip(D_tar) - clip(D_src), so after n steps Z = x_src + (1 - (1 - lam)^n) * that edit.
    source = torch.linspace(-1, 1, DATA.numel(), dtype=torch.float64).reshape(DATA.shape)
    source[1] *= 0.5
    d_target = torch.linspace(-5, 5, source.numel(), dtype=torch.float64).reshape(source.shape)
    d_source = torch.linspace(3, -3, source.numel(), dtype=torch.float64).reshape(source.shape)
    bound = torch.tensor([2.0, 1.0], dtype=torch.float64).view(2, 1, 1, 1)
    moved = 1 - 0.5**3

    def clip(x):
        return torch.maximum(torch.minimum(x, bound), -bound)

    def edit(image, **bound_option):
        return flow_edit(constant_prediction(d_source), constant_prediction(d_target), image, uniform(8),
                         noise_source(), n_max=3, relaxation=0.5, **bound_option)

    assert torch.allclose(edit(source, data_bound=2.0), source + moved * (clip(d_target) - clip(d_source)), atol=1e-12)
    assert torch.allclose(edit(source), source + moved * (d_target - d_source), atol=1e-12)
    source[1] = 0  # an all-zero image has no scale to clip to: it is left unclipped
    edited = edit(source, data_bound=2.0)
    assert torch.allclose(edited[0], source[0] + moved * (clip(d_target) - clip(d_source))[0], atol=1e-12)
    assert torch.allclose(edited[1], moved * (d_target - d_source)[1], atol=1e-12)


def test_data_bound_goes_with_the_renoised_update_and_is_positive():
    for relaxation, bound in ((None, 2.0), (0.5, 0.0), (0.5, -1.0)):
        with pytest.raises(ValueError, match="data_bound must be > 0 and goes with the re-noised update"):
            flow_edit(FLOW.velocity, FLOW.velocity, DATA, uniform(4), noise_source(), n_max=2, relaxation=relaxation,
                      data_bound=bound)


@pytest.mark.parametrize("steps, n_max, n_avg, relaxation", [(10, 5, 2, 0.5), (6, 6, 1, 1.0), (40, 30, 1, 0.3)])
def test_renoised_flow_edit_between_gaussians_follows_the_closed_form_contraction(steps, n_max, n_avg, relaxation):
    # Both flows are N(mu, s^2) per channel, so D(z, t) = mu + a (z - t mu), a = t s^2 / var(t).
    # With Z_tar - Z_src = t (Z - x_src) the noise cancels: the estimate x_src + D_tar - D_src
    # misses the translation d by c e where e = Z - x_src - d and c = t a, so each step scales
    # e by 1 - lam (1 - c), from e = -d.
    d = torch.linspace(0.5, -1.0, 4, dtype=torch.float64).reshape(1, 4, 1, 1)
    target = GaussianFlow(FLOW.mean + d, FLOW.scale)
    stats = EditStats()
    edited = flow_edit(FLOW.velocity, target.velocity, DATA, uniform(steps), noise_source(), n_max=n_max,
                       n_avg=n_avg, relaxation=relaxation, stats=stats)
    remaining = torch.ones_like(FLOW.scale)
    for t in uniform(steps)[steps - n_max:-1]:
        c = t**2 * FLOW.scale**2 / ((1 - t) ** 2 + t**2 * FLOW.scale**2)
        remaining = remaining * (1 - relaxation * (1 - c))
    assert torch.allclose(edited, DATA + d * (1 - remaining), atol=1e-12)
    assert stats.nfe == 2 * n_avg * n_max


def test_renoised_flow_edit_converges_to_the_translation():
    target = GaussianFlow(FLOW.mean + 1.0, FLOW.scale)
    errors = [float((flow_edit(FLOW.velocity, target.velocity, DATA, uniform(steps), noise_source(), n_max=steps // 2,
                               relaxation=0.5) - DATA - 1.0).abs().max()) for steps in (10, 80, 320)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 2e-3, errors


def test_relaxation_must_be_a_fraction():
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="relaxation must be in"):
            flow_edit(FLOW.velocity, FLOW.velocity, DATA, uniform(4), noise_source(), n_max=2, relaxation=bad)


def test_flow_edit_regeneration_follows_the_target_flow():
    # n_min = T - 1: one edit step from t = 0 to 1/T (exact, as above), then the target ODE from
    # the noised edited state y at t_r = 1/T, whose exact flow map is
    # x(1) = mu + scale * (y - t_r mu) / sigma(t_r), sigma(t)^2 = (1 - t)^2 + t^2 scale^2.
    target = GaussianFlow(FLOW.mean + 1.0, FLOW.scale)
    draws = noise_source(3)
    recorded = []
    edited = flow_edit(FLOW.velocity, target.velocity, DATA, uniform(4), lambda: recorded.append(draws()) or recorded[-1],
                       n_max=4, n_min=3, method="dopri5")
    t_r = 0.25
    y = DATA + t_r * 1.0 + (1 - t_r) * (recorded[-1] - DATA)
    sigma = ((1 - t_r) ** 2 + t_r**2 * FLOW.scale**2).sqrt()
    expected = target.mean + FLOW.scale * (y - t_r * target.mean) / sigma
    assert torch.allclose(edited, expected, atol=1e-4)


def test_edit_window_follows_the_paper_indexing():
    assert edit_window(28, 24, 0) == (4, 28)
    assert edit_window(10, 10, 2) == (0, 8)
    for bad in ((10, 3, 3), (10, 11, 0), (10, 5, -1)):
        with pytest.raises(ValueError, match="n_min < n_max <= steps"):
            edit_window(*bad)
