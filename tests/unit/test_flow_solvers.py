"""Flow-aware (data-prediction, exact linear part) methods, the engine's trajectory and counts,
and dopri5's dense output, against closed forms: the Gaussian flow's exact solution and an
independent quadrature of the exponential-integrator integral."""

import math

import numpy
import pytest
import torch

from comfyui_flowmatch.samplers import FLOW_AWARE, METHODS, integrate, nfe_for
from comfyui_flowmatch.samplers.bench import GaussianFlow, gaussian_flow
from comfyui_flowmatch.samplers.exponential import step_weights

pytestmark = pytest.mark.unit

FLOW = gaussian_flow()
NOISE = torch.randn(2, 4, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
EXACT = FLOW.at(NOISE, 1.0)


def uniform(steps):
    return torch.linspace(0, 1, steps + 1, dtype=torch.float64)


def stiff_flow():
    """Gaussian data with scale 0.01: the velocity (D - x) / (1 - t) of an almost deterministic
    x-prediction, whose Jacobian is about -1 / (1 - t) (the stiffness of trained flows)."""
    shape = (1, 4, 1, 1)
    return GaussianFlow(torch.linspace(-1.0, 2.0, 4, dtype=torch.float64).reshape(shape), torch.full(shape, 0.01, dtype=torch.float64))


@pytest.mark.parametrize("flow_name", ["gaussian", "stiff"])
@pytest.mark.parametrize("method, min_order", [("flow_midpoint", 1.8), ("flow_2m", 1.8), ("flow_3m", 2.6), ("flow_reuse", 1.8)])
def test_flow_aware_methods_have_their_order_away_from_sigma_zero(flow_name, method, min_order):
    flow = {"gaussian": FLOW, "stiff": stiff_flow()}[flow_name]
    end = 0.95
    exact = flow.at(NOISE, end)
    errors = [float((integrate(flow.velocity, NOISE, torch.linspace(0, end, n + 1, dtype=torch.float64), method).state - exact).abs().max())
              for n in (64, 128, 256)]
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert min(orders) >= min_order, orders


@pytest.mark.parametrize("method, min_order", [("euler", 0.9), ("midpoint", 1.8), ("heun", 1.8), ("rk3", 2.7), ("rk4", 3.5)])
def test_textbook_methods_keep_their_order_on_the_stiff_flow(method, min_order):
    flow, end = stiff_flow(), 0.95
    errors = [float((integrate(flow.velocity, NOISE, torch.linspace(0, end, n + 1, dtype=torch.float64), method).state
                     - flow.at(NOISE, end)).abs().max()) for n in (64, 128, 256)]
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert min(orders) >= min_order, orders


@pytest.mark.parametrize("method", FLOW_AWARE)
def test_flow_aware_methods_converge_to_sigma_zero(method):
    # The step to sigma = 0 holds the nearest data estimate (the DPM-Solver++ / res_multistep
    # rule): first order in that one step, so the whole run converges at least at first order.
    errors = [float((integrate(FLOW.velocity, NOISE, uniform(n), method).state - EXACT).abs().max()) for n in (16, 32, 64)]
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert min(orders) >= 1.0, orders


@pytest.mark.parametrize("method", ["flow_2m", "flow_3m"])
def test_multistep_last_step_returns_the_last_data_estimate(method):
    solution = integrate(FLOW.velocity, NOISE, uniform(6), method, trajectory=True)
    assert torch.equal(solution.state, solution.trajectory.data[-1])


@pytest.mark.parametrize("method", FLOW_AWARE)
def test_flow_aware_methods_count_calls_and_never_call_sigma_zero(method):
    times = []
    solution = integrate(lambda x, t: times.append(float(t[0])) or FLOW.velocity(x, t), NOISE, uniform(6), method)
    assert len(times) == solution.nfe == nfe_for(method, 6) and max(times) < 1
    assert (solution.accepted, solution.rejected) == (6, 0)


def test_flow_aware_methods_refuse_to_start_an_interval_at_sigma_zero():
    with pytest.raises(ValueError, match="sigma = 1 - t <= 0"):
        integrate(FLOW.velocity, EXACT, uniform(4).flip(0), "flow_2m")


@pytest.mark.parametrize("nodes", [[0.6], [0.6, 0.75], [0.6, 0.75, 0.9], [0.6, 0.45, 0.8]])
def test_step_weights_integrate_the_interpolating_polynomial_exactly(nodes):
    # Independent reference: s_to * int_{s_from}^{s_to} p(u(s)) d(1/s) by Gauss-Legendre
    # quadrature in s, p the Lagrange basis in u = -log s.
    s_from, s_to = 0.6, 0.35
    ratio, weights = step_weights(s_from, s_to, nodes)
    points, quad = (torch.tensor(v, dtype=torch.float64) for v in numpy.polynomial.legendre.leggauss(40))
    s = s_from + (points + 1) / 2 * (s_to - s_from)
    jac = (s_to - s_from) / 2
    u = -torch.log(s)
    un = [-math.log(n) for n in nodes]
    for j, expected in enumerate(weights):
        basis = torch.ones_like(s)
        for k, uk in enumerate(un):
            if k != j:
                basis = basis * (u - uk) / (un[j] - uk)
        reference = float(s_to * (quad * basis * (-1 / s**2)).sum() * jac)
        assert expected == pytest.approx(reference, rel=1e-10, abs=1e-12)
    assert ratio == pytest.approx(s_to / s_from)


def test_step_to_sigma_zero_returns_the_nearest_data_estimate():
    assert step_weights(0.2, 0.0, [0.4, 0.2]) == (0.0, [0.0, 1.0])
    assert step_weights(0.2, 0.0, [0.2, 0.1]) == (0.0, [0.0, 1.0])


def closed_form_2m(denoiser, x, sigmas):
    """DPM-Solver++(2M) written for a flow in u = -log(sigma) with the exact phi-function
    weights (res_multistep's): x' = (s'/s) x + (1 - e^-h) D + (h - 1 + e^-h) (D - D_prev) / h_prev,
    Euler first, x = D at the last step to sigma = 0."""
    previous = None
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        d = denoiser(x, s)
        if s_next == 0:
            x = d
        else:
            h = math.log(s / s_next)
            x = (s_next / s) * x + (1 - math.exp(-h)) * d
            if previous is not None:
                h_prev = math.log(previous[0] / s)
                x = x + (h - 1 + math.exp(-h)) * (d - previous[1]) / h_prev
        previous = (s, d)
    return x


def closed_form_3m_step(x, s, s_next, points):
    """One third-order step: D quadratic in u = -log(sigma) through `points` [(sigma, D)]
    (Newton form around the newest), integrated against e^-(h - tau): phi_1, phi_2, phi_3."""
    (s2, d2), (s1, d1), (s0, d0) = points
    h = math.log(s / s_next)
    u1, u2 = -math.log(s1) + math.log(s), -math.log(s2) + math.log(s)  # negative offsets
    f01 = (d1 - d0) / u1
    f12 = (d2 - d1) / (u2 - u1)
    f012 = (f12 - f01) / u2
    slope = f01 - f012 * u1  # p'(0) of p(u) = d0 + f01 u + f012 u (u - u1)
    m0 = 1 - math.exp(-h)
    m1 = h - m0
    m2 = h * h - 2 * m1
    return (s_next / s) * x + m0 * d0 + m1 * slope + m2 * f012


def data_of(x, s):
    return x + s * FLOW.velocity(x, torch.full((x.shape[0],), 1 - s, dtype=torch.float64))


def test_flow_2m_is_dpm_solver_pp_2m_for_flows():
    sigmas = 1 - torch.tensor([0.0, 0.2, 0.45, 0.6, 0.8, 0.9, 1.0], dtype=torch.float64)
    expected = closed_form_2m(data_of, NOISE, sigmas)
    got = integrate(FLOW.velocity, NOISE, 1 - sigmas, "flow_2m").state
    assert torch.allclose(got, expected, atol=1e-12)


def test_flow_3m_steps_are_the_closed_form_third_order_steps():
    ts = torch.tensor([0.0, 0.2, 0.45, 0.6, 0.8], dtype=torch.float64)
    solution = integrate(FLOW.velocity, NOISE, ts, "flow_3m", trajectory=True)
    states = solution.trajectory.states
    # Step 1 (warm-up): a midpoint stage; from step 2 on the last three points of the fit are
    # (stage or previous start, previous start, this start).
    s_mid = 1 - 0.1
    x_mid = (s_mid / 1.0) * NOISE + (1 - s_mid / 1.0) * data_of(NOISE, 1.0)
    points = [(1.0, data_of(NOISE, 1.0)), (s_mid, data_of(x_mid, s_mid))]
    for i in range(1, len(ts) - 1):
        s, s_next = 1 - float(ts[i]), 1 - float(ts[i + 1])
        points = points[-2:] + [(s, data_of(states[i], s))]
        expected = closed_form_3m_step(states[i], s, s_next, points)
        assert torch.allclose(states[i + 1], expected, atol=1e-12), i
    assert solution.nfe == nfe_for("flow_3m", 4) == 5


@pytest.mark.parametrize("method", list(METHODS))
def test_trajectory_holds_every_grid_point(method):
    ts = uniform(5)
    solution = integrate(FLOW.velocity, NOISE, ts, method, trajectory=True, rtol=1e-8, atol=1e-8)
    path = solution.trajectory
    assert torch.equal(path.ts, ts) and path.states.shape == (6, *NOISE.shape) and path.data.shape == (5, *NOISE.shape)
    assert torch.equal(path.states[0], NOISE) and torch.equal(path.states[-1], solution.state)
    if method == "dopri5":  # dense output at the requested times, within the tolerance's reach
        for t, state in zip(ts, path.states):
            assert float((state - FLOW.at(NOISE, float(t))).abs().max()) < 1e-5
    if method != "flow_reuse":  # flow_reuse reports its reused estimate, not one made at the point
        for t, state, data in zip(ts, path.states, path.data):
            assert torch.allclose(data, data_of(state, 1 - float(t)), atol=1e-5 if method == "dopri5" else 1e-12)
