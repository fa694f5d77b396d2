"""The searched grid with the solver's own states propagated (the recursion of Pei et al. 2025).

`optimal.search`'s default cost starts every step from the reference (teacher forcing), so
its dynamic programme adds up local errors; how they grow on the way to sigma = 0 is not
seen. Here every candidate path keeps the solver's own state: best_k(j) is the smallest
distance to the reference r_j reached at candidate j in k steps, z_k(j) the state that
reached it, and

    best_k(j) = min_i RMS(step(z_{k-1}(i), sigma_i -> sigma_j) - r_j),

so best_N(M) is the true end-point error of the grid found (on the calibration batch). The
recursion is greedy at every intermediate point (a path that is worse at j but better at
the end is not kept), as in the paper. Each (k, i) costs one model call, D(z_{k-1}(i)),
shared by every j: max_steps x M calls for one-call-per-step methods.

Supported (`PROPAGATED_METHODS`): euler and flow_2m, whose step is the exponential step
through the last one or two data estimates (`samplers.exponential.step_weights`, what the
engine runs for them): x_j = ratio * z + sum w * D; and flow_midpoint, whose step adds a
stage at sigma_m = sigma_i + c (sigma_j - sigma_i), predicted from D(z) alone, and steps
through both estimates. Its stage depends on j, so each (k, i) costs 1 + (M - i) calls
instead of 1.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .exponential import step_weights
from .methods import METHODS

PROPAGATED_METHODS = {"euler": 1, "flow_2m": 2, "flow_midpoint": 1}
"""Method -> the number of data estimates carried from step to step (the current one and the history)."""


def _combine(z: Tensor, s_from: float, s_to: float, known: list[tuple[float, Tensor]]) -> Tensor:
    ratio, weights = step_weights(s_from, s_to, [p for p, _ in known])
    x = z * ratio
    for w, (_, data) in zip(weights, known):
        x = x + w * data
    return x


def propagated_grids(denoiser: Callable[..., Tensor], states: list[Tensor], sigmas: Tensor, method: str,
                     max_steps: int, extra_args: dict | None = None,
                     progress: Callable[[int, int], None] | None = None) -> tuple[dict[str, list[float]], dict[str, float], int]:
    """({str(steps): sigmas}, {str(steps): end RMS}, model calls) for steps 1..max_steps.

    Args:
        denoiser: D(x, sigma [B], **extra_args); it may be a `ReferenceMemo` (D at r_0 is then free).
        states: reference states r_k at `sigmas` (`optimal.reference_states`).
        sigmas: the candidates, 1 to 0.
    """
    if method not in PROPAGATED_METHODS:
        raise ValueError(f"propagated search supports {sorted(PROPAGATED_METHODS)}, got {method!r}")
    extra_args = {} if extra_args is None else extra_args
    points = PROPAGATED_METHODS[method]
    s = [float(v) for v in sigmas]
    m = len(s) - 1
    max_steps = min(max_steps, m)
    batch = states[0].shape[0]
    # layer[j] = (cost, state, history: [(sigma, D)] of earlier points, parent path)
    layer: dict[int, tuple[float, Tensor, list[tuple[float, Tensor]], list[int]]] = {0: (0.0, states[0], [], [0])}
    grids, totals, calls = {}, {}, 0

    def data_estimate(z: Tensor, sigma: float) -> Tensor:
        """D(z, sigma), adding the model calls it took (a memo's free hits cost none) to `calls`."""
        nonlocal calls
        before = getattr(denoiser, "calls", None)
        d = denoiser(z, torch.full((batch,), sigma, dtype=z.dtype, device=z.device), **extra_args).to(z.dtype)
        calls += 1 if before is None else denoiser.calls - before
        return d

    for k in range(1, max_steps + 1):
        new_layer: dict[int, tuple[float, Tensor, list[tuple[float, Tensor]], list[int]]] = {}
        for i, (_, z, history, path) in sorted(layer.items()):
            if i == m:
                continue
            known = (history + [(s[i], data_estimate(z, s[i]))])[-points:]
            for j in range(i + 1, m + 1):
                stages = METHODS[method].stages_on(k - 1, s[j])  # flow_midpoint: one stage; the others none
                if stages:
                    s_m = s[i] + stages[0] * (s[j] - s[i])
                    d_m = data_estimate(_combine(z, s[i], s_m, known), s_m)
                    x = _combine(z, s[i], s[j], known + [(s_m, d_m)])
                else:
                    x = _combine(z, s[i], s[j], known)
                cost = float((x.double() - states[j].double()).pow(2).mean().sqrt())
                if j not in new_layer or cost < new_layer[j][0]:
                    new_layer[j] = (cost, x, known[-(points - 1):] if points > 1 else [], path + [j])
        if progress is not None:
            progress(k, max_steps)
        layer = new_layer
        if m in layer:
            grids[str(k)] = [s[p] for p in layer[m][3]]
            totals[str(k)] = layer[m][0]
    if not grids:
        raise ValueError("propagated search found no grid (max_steps < 1?)")
    return grids, totals, calls
