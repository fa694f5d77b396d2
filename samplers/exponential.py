"""Exact integration of the flow ODE's linear part: the weights of the data-prediction step.

In ComfyUI's sigma (sigma = 1 - t, see `samplers/__init__`) a flow's ODE with data estimate
D(x, sigma) is dx/dsigma = (x - D) / sigma. Its linear part x / sigma is what makes the raw
velocity stiff near the data end (an x-prediction model's velocity carries 1 / sigma); solved
exactly (variation of constants, d(x / sigma) = D d(1 / sigma)) it gives

    x(s_to) = (s_to / s_from) * x(s_from) + s_to * integral_{s_from}^{s_to} D(s) d(1 / s),

the data-prediction form of DPM-Solver++ / res_multistep (with log-SNR
lambda = log((1 - s) / s), e^lambda = 1 / s - 1, so d(1 / s) = d(e^lambda): the same integral).
A method chooses points (s_j, D_j) and replaces D by the polynomial through them; the
integral of that polynomial is closed form, so a step is `ratio * x + sum_j w_j * D_j`.

The polynomial is in u = -log(sigma), the variable ComfyUI's res_multistep and dpmpp_2m use
for flows: near the data end it equals lambda (lambda = u + log(1 - sigma)), so D's fine
detail, which resolves on a log scale of sigma, is smooth in it; unlike lambda it is finite
(0) at sigma = 1, so the data estimate at pure noise is an ordinary point of the fit. At
sigma = 0 (u = +inf) the step returns the nearest data estimate (x(0) = D(x(0), 0)), so no
method ever calls the model at sigma = 0. With one point the step is Euler's, exactly (in
exact arithmetic): x + (s_to - s_from) * (x - D) / s_from. (A fit in sigma, which would
extrapolate D to sigma = 0, measured worse on the bundled model at 4 to 16 NFE.)
"""

from __future__ import annotations

import math


def moments(s_from: float, s_to: float, count: int) -> list[float]:
    """m_k = integral_0^h tau^k e^-(h - tau) dtau, k < count (<= 3), for h = log(s_from / s_to):
    the weights of (u - u_from)^k in u = -log(sigma) (s_to * d(1 / s) = e^-(u_to - u) du).

        m_0 = 1 - e^-h = 1 - s_to / s_from,  m_1 = h - m_0,  m_2 = h^2 - 2 m_1.
    """
    if not 1 <= count <= 3:
        raise ValueError(f"moments: count must be 1, 2 or 3, got {count}")
    if s_from <= 0 or s_to <= 0:
        raise ValueError(f"an exponential step in log(sigma) needs sigma > 0 at both ends, got {s_from} -> {s_to}")
    h = math.log(s_from / s_to)
    m0 = -math.expm1(-h)
    m1 = h - m0
    return [m0, m1, h * h - 2 * m1][:count]


def step_weights(s_from: float, s_to: float, nodes: list[float]) -> tuple[float, list[float]]:
    """(ratio, weights) with x(s_to) = ratio * x(s_from) + sum_j weights[j] * D(nodes[j]) when D
    is the polynomial in u = -log(sigma) through the points at `nodes` (distinct sigmas, 1 to 3).
    A step ending at sigma = 0 returns x(0) = D(x(0), 0) ~ the data estimate of the point nearest
    to it (ratio 0, weight 1 there): u = +inf at sigma = 0, where no polynomial but a constant
    has a limit (DPM-Solver++ and ComfyUI's res_multistep end the same way).

    weights = V^-T m for the Vandermonde matrix V[j][k] = (u(nodes[j]) - u(s_from))^k and the
    `moments` m: the integrals of the Lagrange basis polynomials against the weight.
    """
    if len(set(nodes)) != len(nodes):
        raise ValueError(f"step_weights: nodes must be distinct, got {nodes}")
    if s_to == 0:
        nearest = min(range(len(nodes)), key=lambda j: nodes[j])
        return 0.0, [float(j == nearest) for j in range(len(nodes))]
    m, u = moments(s_from, s_to, len(nodes)), [math.log(s_from / s) for s in nodes]
    n = len(nodes)
    # Solve V^T w = m by Gaussian elimination (n <= 3, fp64, partial pivoting).
    rows = [[u[j] ** k for j in range(n)] + [m[k]] for k in range(n)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(rows[r][col]))
        rows[col], rows[pivot] = rows[pivot], rows[col]
        for r in range(n):
            if r != col and rows[r][col] != 0:
                factor = rows[r][col] / rows[col][col]
                rows[r] = [a - factor * b for a, b in zip(rows[r], rows[col])]
    weights = [rows[j][n] / rows[j][j] for j in range(n)]
    return s_to / s_from, weights
