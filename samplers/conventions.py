"""The one place where seed time and ComfyUI's sigma meet.

Seed convention: x_t = (1 - t) * noise + t * data, t = 0 noise, t = 1 data, velocity
v = dx/dt = data - noise.
ComfyUI / diffusers convention: sigma = 1 - t (sigma = 1 noise, sigma = 0 data); their flow
models output noise - data = -v, and ComfyUI's sampler-side model returns the data estimate
("denoised") D(x, sigma) = x - sigma * output.

Functions accept a Python float or a tensor for `t`/`sigma`; a tensor of shape [batch] is
broadcast against a latent of shape [batch, ...].
"""

from __future__ import annotations

from torch import Tensor


def sigma_from_t(t: float | Tensor) -> float | Tensor:
    """ComfyUI's sigma for seed time t: sigma = 1 - t."""
    return 1 - t


def t_from_sigma(sigma: float | Tensor) -> float | Tensor:
    """Seed time for ComfyUI's sigma: t = 1 - sigma."""
    return 1 - sigma


def velocity_from_comfy(output: Tensor) -> Tensor:
    """Seed velocity (data - noise) from a ComfyUI/diffusers flow model output (noise - data)."""
    return -output


def comfy_from_velocity(velocity: Tensor) -> Tensor:
    """ComfyUI/diffusers flow model output (noise - data) from the seed velocity (data - noise)."""
    return -velocity


def per_sample(value: float | Tensor, x: Tensor) -> float | Tensor:
    """`value` shaped to broadcast against `x`: a [batch] tensor becomes [batch, 1, ..., 1]."""
    if isinstance(value, Tensor) and value.ndim == 1:
        return value.reshape(-1, *([1] * (x.ndim - 1)))
    return value


def velocity_from_denoised(x: Tensor, denoised: Tensor, sigma: float | Tensor) -> Tensor:
    """Seed velocity from ComfyUI's denoiser: v = (D - x) / sigma (undefined at sigma = 0).

    From x = (1 - sigma) * data + sigma * noise: dx/dsigma = noise - data = (x - D) / sigma,
    and dt = -dsigma.
    """
    return (denoised - x) / per_sample(sigma, x)


def denoised_from_velocity(x: Tensor, velocity: Tensor, sigma: float | Tensor) -> Tensor:
    """ComfyUI's data estimate from the seed velocity: D = x + sigma * v."""
    return x + per_sample(sigma, x) * velocity


def data_from_velocity(x: Tensor, velocity: Tensor, t: float | Tensor) -> Tensor:
    """Seed data estimate at time t: x1_hat = x + (1 - t) * v (the same as `denoised_from_velocity`)."""
    return denoised_from_velocity(x, velocity, sigma_from_t(t))
