"""Time grids in seed time (t = 0 noise, t = 1 data) and the shifted schedules in use.

The shift formulas are published in sigma = 1 - t; they are written here in sigma and
`time_grid` converts. Grids are float64, ascending in t (descending in sigma).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .conventions import t_from_sigma

SD3_SHIFT = 3.0
AURAFLOW_SHIFT = 1.73
FLUX_BASE_SHIFT, FLUX_MAX_SHIFT = 0.5, 1.15
FLUX_BASE_TOKENS, FLUX_MAX_TOKENS = 256, 4096


def _finite(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def sd3_shift(sigma: Tensor, shift: float) -> Tensor:
    """SD3's static shift: sigma' = s * sigma / (1 + (s - 1) * sigma); s = 1 is the identity,
    s > 1 spends more steps at high noise (SD3 uses 3.0, AuraFlow 1.73)."""
    if _finite("shift", shift) <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    return shift * sigma / (1 + (shift - 1) * sigma)


def flux_shift(sigma: Tensor, mu: float) -> Tensor:
    """Flux's exponential time shift sigma' = e^mu / (e^mu + (1/sigma - 1)), which is
    `sd3_shift` with s = e^mu (written that way it is also defined at sigma = 0)."""
    return sd3_shift(sigma, math.exp(_finite("mu", mu)))


def flux_mu(
    tokens: float,
    *,
    base_shift: float = FLUX_BASE_SHIFT,
    max_shift: float = FLUX_MAX_SHIFT,
    base_tokens: float = FLUX_BASE_TOKENS,
    max_tokens: float = FLUX_MAX_TOKENS,
) -> float:
    """Flux's resolution-dependent mu: linear in the image token count, base_shift at
    base_tokens and max_shift at max_tokens (extrapolated outside)."""
    if _finite("tokens", tokens) <= 0:
        raise ValueError(f"tokens must be > 0, got {tokens}")
    if _finite("max_tokens", max_tokens) == _finite("base_tokens", base_tokens):
        raise ValueError(f"max_tokens must differ from base_tokens, got {max_tokens}")
    slope = (_finite("max_shift", max_shift) - _finite("base_shift", base_shift)) / (max_tokens - base_tokens)
    return base_shift + slope * (tokens - base_tokens)


def flux_tokens(width: int, height: int) -> float:
    """Flux's token count for an image of width x height pixels: (width/16) * (height/16)
    (VAE factor 8, patch 2), unrounded like ComfyUI's ModelSamplingFlux node."""
    if _finite("width", width) <= 0 or _finite("height", height) <= 0:
        raise ValueError(f"width and height must be > 0, got {width}x{height}")
    return width * height / 256


def time_grid(steps: int, *, shift: float = 1.0, mu: float | None = None) -> Tensor:
    """Seed-time grid of steps + 1 points from 0 (noise) to 1 (data), float64.

    Uniform in sigma, then shifted: `shift` is SD3's static shift (1.0 = uniform), `mu`
    Flux's exponential shift (see `flux_mu`); give at most one of them.

    Raises:
        ValueError: steps < 1 or not an int, shift <= 0, non-finite shift or mu, or both set.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if mu is not None and shift != 1.0:
        raise ValueError(f"give shift or mu, not both: shift={shift}, mu={mu}")
    sigmas = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    sigmas = sd3_shift(sigmas, shift) if mu is None else flux_shift(sigmas, mu)
    return t_from_sigma(sigmas)


def grid_from_list(values: list[float] | Tensor, *, space: str = "t") -> Tensor:
    """A user-given grid as a float64 seed-time tensor. `space` says what the values are:
    "t" (seed time) or "sigma" (ComfyUI's noise level, converted by t = 1 - sigma).

    Raises:
        ValueError: fewer than 2 values, NaN/inf, values outside [0, 1], not strictly
            monotonic, or an unknown space.
    """
    if space not in ("t", "sigma"):
        raise ValueError(f"space must be 't' or 'sigma', got {space!r}")
    grid = torch.as_tensor(values, dtype=torch.float64).flatten()
    if grid.numel() < 2:
        raise ValueError(f"a grid needs at least 2 values, got {values!r}")
    if not torch.isfinite(grid).all():
        raise ValueError(f"grid values must be finite, got {grid.tolist()}")
    if (grid < 0).any() or (grid > 1).any():
        raise ValueError(f"grid values must lie in [0, 1], got {grid.tolist()}")
    steps = grid.diff()
    if not ((steps > 0).all() or (steps < 0).all()):
        raise ValueError(f"grid values must be strictly monotonic, got {grid.tolist()}")
    return grid if space == "t" else t_from_sigma(grid)


