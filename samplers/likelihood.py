"""Exact log-likelihood of data under a flow: the instantaneous change of variables.

For dx/dt = v(x, t) carrying the noise density p0 = N(0, I) at t = 0 to the data density
p1 at t = 1 (seed time), log p_t(x_t) changes by d/dt log p_t(x_t) = -div v(x_t, t)
(Chen et al. 2018, Neural ODEs; FFJORD, Grathwohl et al. 2019). So for an image x1:

    log p1(x1) = log N(x0; 0, I) - ∫_0^1 div v(x_t, t) dt,

with x0 the noise the ODE run backwards from x1 reaches. `log_likelihood` integrates x and
the divergence integral together from t = 1 to 0 with `samplers.integrate`.

Divergence: ``"exact"`` takes the Jacobian's trace with one autograd pass per dimension
(for small inputs: D passes per velocity call). ``"hutchinson"`` uses tr J = E[zᵀ J z] for
Rademacher z (one vector-Jacobian product per probe): every probe keeps its z for the
whole path, the x trajectory does not depend on z, so each probe's log p is an unbiased
estimate of the exact one (up to the same ODE discretisation); the K probes' mean is
reported with its standard error std / sqrt(K), whose square is the estimator's stated
variance. For a linear field J the per-probe variance is 2 (||J_sym||_F² - Σ J_ii²) per
unit time before integration.

`bits_per_dim` converts to the usual 8-bit image figure for model space x = 2 k / 255 - 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .solvers import Velocity, integrate

DIVERGENCES = ("exact", "hutchinson")


@dataclass(frozen=True)
class LogLikelihood:
    """Result of `log_likelihood`, per sample [B] in nats.

    Attributes:
        log_p: log p1(x1) (for Hutchinson the mean over probes).
        std_error: standard error of `log_p` (0 for the exact divergence).
        prior: log N(x0; 0, I) at the reached noise.
        divergence_integral: ∫_0^1 div v dt along the path (log_p = prior - this).
        dims: elements per sample D.
        x0: the noise the path reaches [B, ...].
    """

    log_p: Tensor
    std_error: Tensor
    prior: Tensor
    divergence_integral: Tensor
    dims: int
    x0: Tensor

    @property
    def nats_per_dim(self) -> Tensor:
        return -self.log_p / self.dims


def exact_divergence(v: Tensor, x: Tensor) -> Tensor:
    """tr(dv/dx) per sample [B] by one autograd pass per dimension (v, x [B, ...]; v built from x)."""
    flat_v = v.flatten(1)
    trace = torch.zeros(x.shape[0], dtype=v.dtype, device=v.device)
    for i in range(flat_v.shape[1]):
        (grad,) = torch.autograd.grad(flat_v[:, i].sum(), x, retain_graph=True)
        trace = trace + grad.flatten(1)[:, i]
    return trace


def hutchinson_divergence(v: Tensor, x: Tensor, probe: Tensor) -> Tensor:
    """zᵀ (dv/dx) z per sample [B]: an unbiased estimate of the trace for E[z zᵀ] = I."""
    (vjp,) = torch.autograd.grad((v * probe).sum(), x)
    return (vjp * probe).flatten(1).sum(1)


def standard_normal_log_density(x: Tensor) -> Tensor:
    """log N(x; 0, I) per sample [B]."""
    flat = x.flatten(1).double()
    return -0.5 * (flat.pow(2).sum(1) + flat.shape[1] * math.log(2 * math.pi))


def log_likelihood(velocity: Velocity, x1: Tensor, *, steps: int = 32, method: str = "midpoint",
                   divergence: str = "exact", probes: int = 8, generator: torch.Generator | None = None,
                   t_end: float = 1.0) -> LogLikelihood:
    """log p1(x1) under the flow of `velocity` with a standard normal at t = 0.

    Args:
        velocity: velocity(x, t [B]) -> dx/dt in seed time; must be differentiable in x.
        x1: data [B, ...] (model space).
        steps: solver steps from t_end to 0 on a uniform grid.
        method: a fixed-step `samplers.METHODS` name.
        divergence: "exact" (D autograd passes per call) or "hutchinson" (`probes` probes).
        probes: Rademacher probes per sample for "hutchinson" (>= 2, for the error estimate).
        generator: seeds the probes.
        t_end: where the data sit in seed time (1; slightly less avoids a singular end).

    Raises:
        ValueError: unknown divergence, steps < 1, fewer than 2 probes for Hutchinson.
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if divergence == "hutchinson" and probes < 2:
        raise ValueError(f"hutchinson needs probes >= 2 to state its error, got {probes}")
    batch, shape = x1.shape[0], x1.shape[1:]
    copies = probes if divergence == "hutchinson" else 1
    x = x1.detach().repeat(copies, *([1] * len(shape)))
    z = None
    if divergence == "hutchinson":
        z = torch.randint(0, 2, x.shape, generator=generator, device="cpu").to(x.device, x.dtype) * 2 - 1
    dims = math.prod(shape)

    def augmented(state: Tensor, t: Tensor) -> Tensor:
        with torch.inference_mode(False), torch.enable_grad():
            xs = state[:, :dims].reshape(x.shape).to(x1.dtype).detach().requires_grad_(True)
            v = velocity(xs, t)
            div = exact_divergence(v, xs) if z is None else hutchinson_divergence(v, xs, z)
        return torch.cat([v.detach().flatten(1).to(state.dtype), div.detach()[:, None].to(state.dtype)], dim=1)

    start = torch.cat([x.flatten(1), torch.zeros(x.shape[0], 1, dtype=x.dtype, device=x.device)], dim=1)
    ts = torch.linspace(t_end, 0.0, steps + 1, dtype=torch.float64 if x1.dtype == torch.float64 else torch.float32)
    end = integrate(augmented, start, ts.to(x.device), method).state
    x0 = end[:, :dims].reshape(x.shape)
    # The last column is ∫_{t_end}^{0} div v dt = -∫_0^{t_end} div v dt.
    integral = -end[:, dims].double().reshape(copies, batch)
    prior = standard_normal_log_density(x0).reshape(copies, batch)
    estimates = prior - integral
    std_error = estimates.std(0) / math.sqrt(copies) if copies > 1 else torch.zeros(batch, dtype=torch.float64)
    return LogLikelihood(log_p=estimates.mean(0), std_error=std_error, prior=prior.mean(0),
                         divergence_integral=integral.mean(0), dims=dims, x0=x0[:batch])


def bits_per_dim(log_p: Tensor, dims: int, levels: int = 256) -> Tensor:
    """Bits per dimension of 8-bit data from log p of model-space x = 2 k / (levels - 1) - 1.

    The bin of one intensity level has width 2 / (levels - 1) in model space, so
    log P(k) ≈ log p(x) + D log(2 / (levels - 1)); bits/dim = -log2 P(k) / D.
    """
    return -(log_p + dims * math.log(2 / (levels - 1))) / (dims * math.log(2))
