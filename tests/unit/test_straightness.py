"""Straightness diagnostic against closed forms: straight flows score 0, a rotation its analytic value."""

import math

import pytest
import torch

from comfyui_flowmatch.samplers.straightness import measure_straightness

pytestmark = pytest.mark.unit


def rotation(omega: float):
    """v(x, t) = A x with A = [[0, -omega], [omega, 0]]: paths are circular arcs of angle omega."""
    a = torch.tensor([[0.0, -omega], [omega, 0.0]], dtype=torch.float64)
    return lambda x, t: x @ a.T


def rotation_profile(omega: float, t: torch.Tensor) -> torch.Tensor:
    """||(x1 - x0) - v(x_t)||² / ||x1 - x0||² for the rotation: the chord has length 2r sin(w/2),
    v has length w r, and the angle between them is w (t - 1/2)."""
    chord2 = 4 * math.sin(omega / 2) ** 2
    return (chord2 + omega**2 - 4 * omega * math.sin(omega / 2) * torch.cos(omega * (t - 0.5))) / chord2


def test_straight_paths_score_zero_at_any_step_count():
    target = torch.randn(4, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    toward_target = lambda x, t: (target - x) / (1 - t).view(-1, 1, 1, 1)  # noqa: E731
    x0 = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    for steps in (1, 3, 20):
        result = measure_straightness(toward_target, x0, torch.linspace(0, 1, steps + 1, dtype=torch.float64))
        assert result.value == pytest.approx(0.0, abs=1e-20)
        assert result.profile.abs().max() < 1e-12
        torch.testing.assert_close(result.x1, target)


@pytest.mark.parametrize("omega", [math.pi / 2, 2.0])
def test_rotation_matches_its_closed_form(omega):
    x0 = torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ts = torch.linspace(0, 1, 2001, dtype=torch.float64)
    result = measure_straightness(rotation(omega), x0, ts, method="rk4")
    expected = omega**2 / (4 * math.sin(omega / 2) ** 2) - 1  # ∫ profile dt
    assert result.value == pytest.approx(expected, rel=2e-3)
    torch.testing.assert_close(result.per_sample, torch.full((16,), expected, dtype=torch.float32), rtol=2e-3, atol=0)
    torch.testing.assert_close(result.profile.double(), rotation_profile(omega, result.ts.double()), rtol=1e-4, atol=1e-6)
    # the strip ends at the endpoint and starts at the first data estimate x0 + v(x0, 0)
    torch.testing.assert_close(result.data_estimates[-1].double(), result.x1)
    torch.testing.assert_close(result.data_estimates[0].double(), x0 + rotation(omega)(x0, None), rtol=1e-6, atol=1e-6)


def test_a_curved_flow_scores_more_than_a_less_curved_one():
    x0 = torch.randn(8, 2, dtype=torch.float64)
    ts = torch.linspace(0, 1, 101, dtype=torch.float64)
    assert measure_straightness(rotation(0.5), x0, ts).value < measure_straightness(rotation(1.5), x0, ts).value


def test_descending_grid_is_refused():
    with pytest.raises(ValueError, match="ascending"):
        measure_straightness(rotation(1.0), torch.zeros(1, 2), torch.tensor([1.0, 0.0]))
