"""How straight a flow's paths are: Liu et al.'s straightness along sampled trajectories.

For an ODE dx/dt = v(x, t) run from noise x0 at t = 0 to x1 at t = 1 (seed time),
Rectified Flow (Liu, Gong & Liu 2022) defines

    S = E ∫_0^1 || (x1 - x0) - v(x_t, t) ||² dt,

which is 0 exactly when every path is a straight line walked at constant speed (then one
Euler step is exact). `measure_straightness` reports S per dimension and normalised by
E ||x1 - x0||², so 0 = straight and the number does not depend on the data's scale or
size, plus the per-t profile of the same quantity. The integral is the left Riemann sum
over the solver's grid points (the velocities the solver evaluates there), the same
quadrature Euler uses, so a constant-velocity path scores exactly 0 at any step count.
Works for any velocity (the bundled model, ComfyUI's denoiser of a native flow model,
an analytic field); no ComfyUI import.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .solvers import Velocity, integrate


@dataclass(frozen=True)
class Straightness:
    """Result of `measure_straightness`.

    Attributes:
        value: normalised S, E ∫ ||(x1 - x0) - v||² dt / E ||x1 - x0||² (0 = straight).
        per_dim: unnormalised S divided by the number of elements per sample.
        per_sample: normalised S of each sample [B].
        ts: [N] the times of the profile (the solver's step starts).
        profile: [N] E ||(x1 - x0) - v(x_t, t)||² / E ||x1 - x0||² at each time in `ts`.
        data_estimates: [N + 1, B, ...] the data estimate x_t + (1 - t) v at each time in
            `ts`, then the endpoint x1 (cpu, fp32): the trajectory strip.
        x1: the endpoint [B, ...] (input dtype and device).
    """

    value: float
    per_dim: float
    per_sample: Tensor
    ts: Tensor
    profile: Tensor
    data_estimates: Tensor
    x1: Tensor


def measure_straightness(velocity: Velocity, x0: Tensor, ts: Tensor, method: str = "euler") -> Straightness:
    """Integrate from `x0` along the ascending grid `ts` (normally 0 -> 1) and measure straightness.

    Args:
        velocity: velocity(x, t [B]) -> dx/dt in seed time (see `samplers.integrate`).
        x0: start state (noise) [B, ...].
        ts: ascending 1-D grid; the measure integrates over [ts[0], ts[-1]].
        method: any `samplers.METHODS` name; its step-start velocities form the profile.

    Raises:
        ValueError: a descending grid (straightness is defined noise -> data).
    """
    if ts.ndim != 1 or ts.numel() < 2 or not bool((ts[1:] > ts[:-1]).all()):
        raise ValueError("ts must be an ascending 1-D grid with at least 2 points (noise -> data)")
    times, velocities, estimates = [], [], []

    def at_step(i: int, t: float, state: Tensor, data: Tensor) -> None:
        # data = state + (1 - t) v(state, t): the solver's own velocity at the step start.
        times.append(float(t))
        velocities.append(((data - state) / (1 - t)).detach().double().cpu())
        estimates.append(data.detach().float().cpu())

    x1 = integrate(velocity, x0, ts, method, callback=at_step).state
    chord = (x1.detach().double().cpu() - x0.detach().double().cpu()).flatten(1)
    t = torch.tensor(times + [float(ts[-1])], dtype=torch.float64)
    dt = t[1:] - t[:-1]
    deviation = torch.stack([(chord - v.flatten(1)).pow(2).sum(1) for v in velocities])  # [N, B]
    norm = chord.pow(2).sum(1)  # [B]
    total = (dt[:, None] * deviation).sum(0)  # [B]
    estimates.append(x1.detach().float().cpu())
    return Straightness(
        value=float(total.sum() / norm.sum()),
        per_dim=float(total.mean() / chord.shape[1]),
        per_sample=(total / norm).float(),
        ts=t[:-1].float(),
        profile=(deviation.sum(1) / norm.sum()).float(),
        data_estimates=torch.stack(estimates),
        x1=x1,
    )
