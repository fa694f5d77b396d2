"""The optimal-schedule search against answers it does not compute itself: exhaustive
enumeration, a flow whose Euler error is known in closed form, the Gaussian flow's exact
states, and a cache that must not call the model twice."""

import itertools
import math

import pytest
import torch

from comfyui_flowmatch.samplers import comfy_bridge
from comfyui_flowmatch.samplers.bench import gaussian_flow
from comfyui_flowmatch.samplers.exponential import step_weights
from comfyui_flowmatch.samplers.optimal import (
    ReferenceMemo,
    ScheduleCache,
    SearchSettings,
    best_grid,
    best_pair_grid,
    searched_method,
    cached_search,
    candidate_sigmas,
    denoiser_from_velocity,
    reference_states,
    search,
    step_costs,
)

pytestmark = pytest.mark.unit


def brute_force(cost_of_step, m: int, steps: int) -> tuple[tuple[int, ...], float]:
    """Every grid 0 < k_1 < ... < k_{steps-1} < m, summed with `cost_of_step(i, j)`."""
    best = None
    for inner in itertools.combinations(range(1, m), steps - 1):
        path = (0, *inner, m)
        total = sum(cost_of_step(a, b) for a, b in zip(path, path[1:]))
        if best is None or total < best[1]:
            best = (path, total)
    return best


@pytest.mark.parametrize("steps", [1, 2, 3, 5, 7])
def test_dynamic_programming_equals_exhaustive_search(steps):
    costs = torch.rand(9, 9, generator=torch.Generator().manual_seed(steps), dtype=torch.float64)
    costs = costs.triu(1) + torch.tril(torch.full((9, 9), math.inf, dtype=torch.float64))
    path, total = best_grid(costs, steps)
    expected_path, expected_total = brute_force(lambda i, j: float(costs[i, j]), 8, steps)
    assert tuple(path) == expected_path
    assert total == pytest.approx(expected_total, rel=1e-12)


def brute_force_pairs(first, cost3, m: int, steps: int) -> tuple[tuple[int, ...], float]:
    """Every grid, summed with first(j) for its first step and cost3(h, i, j) after that."""
    best = None
    for inner in itertools.combinations(range(1, m), steps - 1):
        path = (0, *inner, m)
        total = first(path[1]) + sum(cost3(*path[k:k + 3]) for k in range(len(path) - 2))
        if best is None or total < best[1]:
            best = (path, total)
    return best


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 6])
def test_pair_dynamic_programming_equals_exhaustive_search(steps):
    generator = torch.Generator().manual_seed(10 + steps)
    first = torch.rand(8, generator=generator, dtype=torch.float64)
    cost3 = torch.rand(8, 8, 8, generator=generator, dtype=torch.float64)
    path, total = best_pair_grid(first, cost3, steps)
    expected_path, expected_total = brute_force_pairs(lambda j: float(first[j]), lambda h, i, j: float(cost3[h, i, j]),
                                                      7, steps)
    assert tuple(path) == expected_path
    assert total == pytest.approx(expected_total, rel=1e-12)


def test_best_grid_refuses_impossible_step_counts():
    costs = torch.zeros(5, 5)
    with pytest.raises(ValueError, match="steps must be an int in 1..4"):
        best_grid(costs, 5)
    with pytest.raises(ValueError, match="square"):
        best_grid(torch.zeros(3, 4), 1)


def quadratic_denoiser(x, sigma, **extra):
    """dx/dsigma = sigma (independent of x): D = x - sigma^2, since dx/dsigma = (x - D) / sigma.
    One Euler step a -> b misses the exact x + (b^2 - a^2) / 2 by exactly (a - b)^2 / 2."""
    return x - sigma.reshape(-1, 1, 1, 1) ** 2


@pytest.mark.parametrize("steps", [2, 3, 4, 6])
def test_euler_search_recovers_the_uniform_grid_of_a_flow_with_known_error(steps):
    sigmas = torch.linspace(1, 0, 13, dtype=torch.float64)
    x = torch.randn(2, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    memo = ReferenceMemo(quadratic_denoiser, sigmas)
    states = reference_states(memo, x, sigmas, 2, {})
    for sigma, state in zip(sigmas, states):  # the exact solution: x + (sigma^2 - 1) / 2
        assert torch.allclose(state, x + (sigma**2 - 1) / 2, atol=1e-6)
    costs = step_costs(memo, states, sigmas, "euler", {})
    i, j = torch.triu_indices(13, 13, 1)
    assert torch.allclose(costs[i, j], (sigmas[i] - sigmas[j]) ** 2 / 2, atol=1e-6)
    path, total = best_grid(costs, steps)
    # Sum of h^2 / 2 over steps summing to 1 is least for equal steps: 1 / (2 * steps).
    assert path == [round(12 * k / steps) for k in range(steps + 1)]
    assert total == pytest.approx(1 / (2 * steps), abs=1e-5)


def test_midpoint_search_on_the_gaussian_flow_matches_enumeration_from_exact_states():
    flow = gaussian_flow(channels=3, dims=4)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64).float()
    denoiser = denoiser_from_velocity(flow.velocity)
    record = search(denoiser, x, SearchSettings("midpoint", candidates=8, substeps=8))
    sigmas = torch.tensor(record.sigmas, dtype=torch.float64)

    def exact(k):
        return flow.at(x.double(), 1 - float(sigmas[k])).float()

    def cost(i, j):  # one midpoint step from the exact state, against the exact state
        out = comfy_bridge.sample_flow(denoiser, exact(i), torch.stack([sigmas[i], sigmas[j]]), method="midpoint")
        return float((out.double() - exact(j).double()).pow(2).mean().sqrt())

    for steps in (2, 3, 4):
        grid, total = record.grid(steps)
        expected_path, expected_total = brute_force(cost, 8, steps)
        assert torch.allclose(grid.double(), sigmas[list(expected_path)].float().double())
        assert total == pytest.approx(expected_total, rel=1e-3, abs=1e-6)


def test_flow_2m_search_matches_enumeration_of_closed_form_teacher_forced_steps():
    """flow_2m's step i -> j after h, from the exact state with exact D at h and i, is the
    closed-form exponential step through those two points (samplers.exponential)."""
    flow = gaussian_flow(channels=3, dims=4)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64).float()
    denoiser = denoiser_from_velocity(flow.velocity)
    record = search(denoiser, x, SearchSettings("flow_2m", candidates=7, substeps=8))
    assert record.nfe == 4 * 8 * 6 + 4 * 7 + 3  # the reference only: the pair costs need no model call
    sigmas = [float(s) for s in record.sigmas]

    def exact(k):
        return flow.at(x.double(), 1 - sigmas[k])

    def data(k):
        return denoiser_from_velocity(flow.velocity)(exact(k), torch.full((2,), sigmas[k], dtype=torch.float64))

    def error(state, k):
        return float((state - exact(k)).pow(2).mean().sqrt())

    def first(j):
        ratio, (w,) = step_weights(sigmas[0], sigmas[j], [sigmas[0]])
        return error(ratio * exact(0) + w * data(0), j)

    def cost3(h, i, j):
        ratio, (w_i, w_h) = step_weights(sigmas[i], sigmas[j], [sigmas[i], sigmas[h]])
        return error(ratio * exact(i) + w_i * data(i) + w_h * data(h), j)

    for steps in (2, 3, 4):
        grid, total = record.grid(steps)
        expected_path, expected_total = brute_force_pairs(first, cost3, 7, steps)
        assert grid.tolist() == pytest.approx([sigmas[k] for k in expected_path], abs=1e-7)
        assert total == pytest.approx(expected_total, rel=2e-3, abs=1e-6)


@pytest.mark.parametrize("method", ["euler", "flow_2m", "flow_midpoint"])
def test_propagated_search_scores_the_true_end_error_of_its_grid(method):
    """Its cost is the RMS at sigma = 0 of the sampler itself run on the grid it found."""
    flow = gaussian_flow(channels=3, dims=4)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(5))
    denoiser = denoiser_from_velocity(flow.velocity)
    record = search(denoiser, x, SearchSettings(method, candidates=12, substeps=4, objective="propagated", max_steps=5))
    end = flow.at(x.double(), 1.0)
    for steps in (2, 3, 5):
        grid, total = record.grid(steps)
        run = comfy_bridge.sample_flow(denoiser, x, grid.double(), method=method)
        error = float((run.double() - end).pow(2).mean().sqrt())
        assert total == pytest.approx(error, rel=2e-3, abs=1e-5)
    with pytest.raises(ValueError, match="steps must be in 1..5"):
        record.grid(6)


def test_methods_with_longer_history_use_a_related_search():
    assert searched_method("flow_3m") == "flow_2m" and searched_method("flow_reuse") == "flow_2m"
    assert searched_method("heun") == "heun"
    with pytest.raises(ValueError, match="fixed-step"):
        searched_method("dopri5")


class CountingDenoiser:
    def __init__(self, denoiser):
        self.denoiser, self.calls = denoiser, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.denoiser(*args, **kwargs)


def test_a_cached_search_never_calls_the_model_again(tmp_path):
    flow = gaussian_flow(channels=3, dims=4)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    settings = SearchSettings("heun", {"prompts": ["toy"], "seed": 2}, candidates=6, substeps=1)
    cache = ScheduleCache(tmp_path / "cache")
    first_model = CountingDenoiser(denoiser_from_velocity(flow.velocity))
    first, hit = cached_search(cache, first_model, x, settings, "model-a")
    assert not hit and first_model.calls == first.nfe > 0
    again = CountingDenoiser(denoiser_from_velocity(flow.velocity))
    second, hit = cached_search(cache, again, x, settings, "model-a")
    assert hit and again.calls == 0
    assert torch.equal(second.grid(3)[0], first.grid(3)[0])
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".json"]  # no partial files left
    other = CountingDenoiser(denoiser_from_velocity(flow.velocity))
    _, hit = cached_search(cache, other, x, settings, "model-b")  # other weights: searched anew
    assert not hit and other.calls > 0


def test_memo_saves_exactly_the_first_stage_of_every_step():
    """Euler's costs need no model call beyond the reference; heun's need one per pair."""
    flow = gaussian_flow(channels=3, dims=4)
    x = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    denoiser = denoiser_from_velocity(flow.velocity)
    m = 6
    euler = search(denoiser, x, SearchSettings("euler", candidates=m, substeps=1))
    heun = search(denoiser, x, SearchSettings("heun", candidates=m, substeps=1))
    reference_calls = 4 * (m - 1) + 3  # rk4 per interval, rk3 into sigma = 0
    assert euler.nfe == reference_calls
    pairs_not_ending_at_zero = m * (m - 1) // 2
    assert heun.nfe == reference_calls + pairs_not_ending_at_zero  # heun's last step is euler


def test_candidates_run_from_noise_to_data():
    sigmas = candidate_sigmas(10)
    assert sigmas[0] == 1 and sigmas[-1] == 0 and (sigmas.diff() < 0).all()
    with pytest.raises(ValueError):
        candidate_sigmas(0)
