"""integrate(): observed order, NFE, inversion, dtypes, callbacks, errors and memory, against
the closed-form Gaussian flow (exact velocity and endpoint)."""

import math
import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from comfyui_flowmatch.samplers import METHODS, integrate, nfe_for
from comfyui_flowmatch.samplers.solvers import BUFFERS
from comfyui_flowmatch.samplers.bench import gaussian_flow

pytestmark = pytest.mark.unit

FLOW = gaussian_flow()
NOISE = torch.randn(2, 4, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
EXACT = FLOW.at(NOISE, 1.0)


def uniform(steps, dtype=torch.float64):
    return torch.linspace(0, 1, steps + 1, dtype=dtype)


def endpoint_error(method, steps):
    return float((integrate(FLOW.velocity, NOISE, uniform(steps), method).state - EXACT).abs().max())


def test_closed_form_is_the_flow():
    t, h = 0.37, 1e-6
    derivative = (FLOW.at(NOISE, t + h) - FLOW.at(NOISE, t - h)) / (2 * h)
    assert torch.allclose(FLOW.velocity(FLOW.at(NOISE, t), torch.full((2,), t, dtype=torch.float64)), derivative, atol=1e-8)


@pytest.mark.parametrize("method, min_order", [("euler", 0.9), ("midpoint", 1.8), ("heun", 1.8), ("rk3", 2.7), ("rk4", 3.5)])
def test_observed_order(method, min_order):
    errors = [endpoint_error(method, steps) for steps in (16, 32, 64)]
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert min(orders) >= min_order, orders


@pytest.mark.parametrize("method, per_step", [("euler", 1), ("midpoint", 2), ("heun", 2), ("rk3", 3), ("rk4", 4)])
def test_fixed_methods_make_their_documented_velocity_calls(method, per_step):
    calls = []
    solution = integrate(lambda x, t: calls.append(1) or FLOW.velocity(x, t), NOISE, uniform(7), method)
    assert len(calls) == solution.nfe == nfe_for(method, 7) == per_step * 7
    assert (solution.accepted, solution.rejected) == (7, 0)


def test_dopri5_meets_its_tolerance_with_fewer_calls_than_rk4():
    stats = integrate(FLOW.velocity, NOISE, torch.tensor([0.0, 1.0]), "dopri5", rtol=1e-7, atol=1e-7)
    error = float((stats.state - EXACT).abs().max())
    assert error < 1e-6
    assert stats.accepted > 0 and stats.nfe >= 6 * (stats.accepted + stats.rejected)
    rk4_steps = next(n for n in range(4, 200) if endpoint_error("rk4", n) <= error)
    assert stats.nfe < nfe_for("rk4", rk4_steps), (stats, rk4_steps)


def test_dopri5_steps_do_not_depend_on_the_requested_grid():
    a = integrate(FLOW.velocity, NOISE, torch.tensor([0.0, 1.0]), "dopri5")
    b = integrate(FLOW.velocity, NOISE, uniform(9), "dopri5")
    assert torch.equal(a.state, b.state) and (a.nfe, a.accepted, a.rejected) == (b.nfe, b.accepted, b.rejected)


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun", "rk3", "rk4", "dopri5"])
def test_forward_then_back_returns_the_start_within_the_method_error(method):
    ts = uniform(32)
    forward = float((integrate(FLOW.velocity, NOISE, ts, method).state - EXACT).abs().max())
    back = integrate(FLOW.velocity, integrate(FLOW.velocity, NOISE, ts, method).state, ts.flip(0), method).state
    exact_back = integrate(FLOW.velocity, EXACT, ts.flip(0), method).state
    # Going back expands some channels by up to 1/0.3, and two runs' errors add up.
    assert float((back - NOISE).abs().max()) <= 8 * forward
    assert float((exact_back - NOISE).abs().max()) <= 8 * forward


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 4, 6, 6), (1, 4, 3, 4, 4)])
def test_dtypes_and_latent_ranks(dtype, shape):
    flow = gaussian_flow(4, len(shape), torch.float32)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    seen = []

    def velocity(x, t):
        seen.append((x.dtype, t.dtype, t.shape))
        return flow.velocity(x.float(), t).to(x.dtype)

    x1 = integrate(velocity, noise.to(dtype), uniform(16, torch.float32), "rk4").state
    assert x1.dtype == dtype and x1.shape == shape
    assert set(seen) == {(dtype, torch.float32, (shape[0],))}
    tol = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 1e-1}[dtype]
    assert float((x1.float() - flow.at(noise, 1.0)).abs().max()) < tol


def test_the_input_is_not_modified_and_aliasing_outputs_are_safe():
    x = NOISE.clone()
    growth = integrate(lambda x, t: x, x, uniform(8), "rk4").state  # dx/dt = x: x * e
    assert torch.equal(x, NOISE)
    assert torch.allclose(growth, NOISE * math.e, rtol=1e-5)


def test_callback_gets_each_step_and_the_data_estimate():
    seen = []
    integrate(FLOW.velocity, NOISE, uniform(4), "heun", callback=lambda i, t, x, data: seen.append((i, t, x.clone(), data)))
    assert [(i, t) for i, t, _, _ in seen] == [(0, 0.0), (1, 0.25), (2, 0.5), (3, 0.75)]
    for _, t, x, data in seen:
        v = FLOW.velocity(x, torch.full((2,), t, dtype=torch.float64))
        assert torch.allclose(data, x + (1 - t) * v)
    assert torch.allclose(seen[0][3], FLOW.mean.expand_as(NOISE) + 0 * NOISE)  # at t=0 the estimate is E[data]


def test_dopri5_calls_back_once_per_requested_time():
    seen = []
    solution = integrate(FLOW.velocity, NOISE, uniform(1), "dopri5", callback=lambda i, t, x, d: seen.append(i))
    assert seen == [0] and solution.accepted > 1


def test_non_finite_state_names_the_step_and_t():
    def velocity(x, t):
        return x * float("nan") if float(t[0]) >= 0.5 else x

    with pytest.raises(FloatingPointError, match=r"step 2 \(t=0\.75\)"):
        integrate(velocity, NOISE, uniform(4), "euler")
    with pytest.raises(FloatingPointError, match="t="):
        integrate(velocity, NOISE, uniform(1), "dopri5")


@pytest.mark.parametrize(
    "ts, method, match",
    [
        (torch.tensor([0.0, 1.0]), "ddim", "method must be one of"),
        (torch.tensor([0.0]), "euler", "at least 2"),
        (torch.tensor([[0.0, 1.0]]), "euler", "1-D"),
        (torch.tensor([0.0, 0.5, 0.4, 1.0]), "euler", "strictly monotonic"),
        (torch.tensor([0.0, float("nan"), 1.0]), "euler", "finite"),
        (torch.tensor([0.0, 1.0]), "dopri5", "rtol=0.0"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_the_value(ts, method, match):
    with pytest.raises(ValueError, match=match):
        integrate(FLOW.velocity, NOISE, ts, method, rtol=0.0 if method == "dopri5" else 1e-5)


def test_methods_table_is_the_one_registry():
    assert set(METHODS) == {"euler", "midpoint", "heun", "rk3", "rk4", "dopri5", "flow_midpoint", "flow_2m", "flow_3m", "flow_reuse"}
    for name, method in METHODS.items():
        assert method.name == name and method.kind in {"tableau", "multistep", "adaptive"} and method.variable in {"t", "sigma"}
        assert (method.calls_per_step is None) == (method.kind == "adaptive")
        assert (method.tableau is not None) == (method.variable == "t" and method.kind != "adaptive")


class LatentBuffers(TorchDispatchMode):
    """Counts live tensors of a given size created inside the mode; records the peak."""

    def __init__(self, numel):
        super().__init__()
        self.numel, self.live, self.peak, self.seen = numel, 0, 0, set()

    def _release(self, key):
        self.seen.discard(key)
        self.live -= 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.numel() == self.numel and id(t) not in self.seen:
                self.seen.add(id(t))
                self.live += 1
                weakref.finalize(t, self._release, id(t))
        self.peak = max(self.peak, self.live)
        return out


@pytest.mark.parametrize("method", list(METHODS))
def test_latent_sized_buffers_match_the_documented_count_and_do_not_grow(method):
    x = torch.randn(2, 3, 5, 7)
    for steps in (4, 16):
        with LatentBuffers(x.numel()) as buffers:
            out = integrate(lambda x, t: torch.mul(x, -0.5), x, uniform(steps, torch.float32)[:-1], method, atol=1e-9, rtol=1e-9)
        assert buffers.peak == BUFFERS[method], (steps, buffers.peak)
        del out


@pytest.mark.parametrize("method", ["euler", "midpoint", "heun", "rk3", "rk4"])
def test_order_on_a_nonlinear_ode_is_the_documented_one(method):
    # dx/dt = -2 t x^2, x(0) = 1 has x(t) = 1 / (1 + t^2); the Gaussian flow above lets
    # midpoint superconverge, this one does not.
    x0 = torch.ones(1, 3, dtype=torch.float64)
    errors = [abs(float(integrate(lambda x, t: -2 * t[:, None] * x**2, x0, uniform(n), method).state[0, 0]) - 0.5) for n in (32, 64, 128)]
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(METHODS[method].order - 0.2 <= p <= METHODS[method].order + 0.5 for p in orders), orders
