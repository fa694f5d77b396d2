"""Solver benchmark on a flow with a closed-form solution: `python -m comfyui_flowmatch.samplers.bench`.

The flow carries N(0, I) noise to a diagonal Gaussian N(mu, diag(s^2)) along the seed's
straight-line path with independent coupling. The marginal at t is N(t mu, var_t) with
var_t = (1 - t)^2 + t^2 s^2, the flow map is affine, x_t = t mu + sqrt(var_t) * noise, so
    v(x, t) = mu + (t s^2 - (1 - t)) / var_t * (x - t mu),   x_1 = mu + s * x_0.
Prints error, NFE, observed order and the time of `integrate` relative to the bare velocity
calls, and writes a PNG of error vs NFE.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .methods import METHODS, nfe_for
from .solvers import integrate

FIXED = [name for name, method in METHODS.items() if method.calls_per_step is not None]


@dataclass(frozen=True)
class GaussianFlow:
    """Noise -> N(mean, diag(scale^2)) with its exact velocity; mean/scale broadcast per channel."""

    mean: Tensor
    scale: Tensor

    def velocity(self, x: Tensor, t: Tensor) -> Tensor:
        t = t.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        var = (1 - t) ** 2 + t**2 * self.scale**2
        return self.mean + (t * self.scale**2 - (1 - t)) / var * (x - t * self.mean)

    def at(self, noise: Tensor, t: float) -> Tensor:
        """Exact state at time t starting from `noise` at t = 0."""
        return t * self.mean + ((1 - t) ** 2 + t**2 * self.scale**2).sqrt() * noise


def gaussian_flow(channels: int = 4, dims: int = 4, dtype: torch.dtype = torch.float64) -> GaussianFlow:
    """A fixed anisotropic Gaussian target for latents [B, channels, *spatial] of rank `dims`."""
    shape = (1, channels) + (1,) * (dims - 2)
    mean = torch.linspace(-1.0, 2.0, channels, dtype=dtype).reshape(shape)
    scale = torch.linspace(0.3, 1.5, channels, dtype=dtype).reshape(shape)
    return GaussianFlow(mean, scale)


def endpoint_error(flow: GaussianFlow, noise: Tensor, method: str, steps: int, **options) -> tuple[float, int]:
    """Max-abs error at t = 1 and the velocity calls used, for `steps` uniform intervals."""
    solution = integrate(flow.velocity, noise, torch.linspace(0, 1, steps + 1, dtype=torch.float64), method, **options)
    return float((solution.state.double() - flow.at(noise.double(), 1.0)).abs().max()), solution.nfe


def accuracy_table(steps_list: list[int], tolerances: list[float]) -> list[dict]:
    """One row per (method, steps) or (dopri5, tolerance) in fp64: error, NFE, observed order."""
    flow = gaussian_flow()
    noise = torch.randn(2, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    rows = []
    for method in FIXED:
        previous = None
        for steps in steps_list:
            error, nfe = endpoint_error(flow, noise, method, steps)
            order = math.log(previous[0] / error) / math.log(steps / previous[1]) if previous else float("nan")
            rows.append({"method": method, "steps": steps, "error": error, "nfe": nfe, "order": order})
            previous = (error, steps)
    for tol in tolerances:
        error, nfe = endpoint_error(flow, noise, "dopri5", 1, rtol=tol, atol=tol)
        rows.append({"method": "dopri5", "steps": f"tol {tol:g}", "error": error, "nfe": nfe, "order": float("nan")})
    return rows


def _timed_pair(velocity, x: Tensor, ts: Tensor, method: str, repeats: int) -> tuple[list[float], list[float]]:
    """Interleaved wall times of `integrate` and of the same number of bare velocity calls."""
    nfe = nfe_for(method, len(ts) - 1)
    t_batch = torch.zeros(x.shape[0])
    ours, bare = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(nfe):
            velocity(x, t_batch)
        bare.append(time.perf_counter() - start)
        start = time.perf_counter()
        integrate(velocity, x, ts, method)
        ours.append(time.perf_counter() - start)
    return ours, bare


def overhead_ratio(method: str, steps: int, shape: tuple[int, ...], repeats: int) -> tuple[float, float, float]:
    """(median integrate / bare velocity calls for a velocity of >= 1 ms, that call's median
    ms, and integrate's own cost in microseconds per velocity call, measured with a velocity
    that costs almost nothing). The >= 1 ms velocity is the Gaussian flow plus a fixed matmul."""
    flow = gaussian_flow(shape[1], len(shape), torch.float32)
    weight = torch.randn(512, 512)

    def heavy(x: Tensor, t: Tensor) -> Tensor:
        torch.mm(weight, weight)
        return flow.velocity(x, t)

    x, ts = torch.randn(shape), torch.linspace(0, 1, steps + 1)
    nfe = nfe_for(method, steps)
    ours, bare = _timed_pair(heavy, x, ts, method, repeats)
    ratio = statistics.median(a / b for a, b in zip(ours, bare))
    light_ours, light_bare = _timed_pair(lambda x, t: torch.mul(x, 0.5), x, ts, method, 5 * repeats)
    per_call_us = (statistics.median(light_ours) - statistics.median(light_bare)) / nfe * 1e6
    return ratio, statistics.median(bare) / nfe * 1e3, per_call_us


def plot(rows: list[dict], path: Path) -> None:
    """Error vs NFE, log-log, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=100)
    for method in [*FIXED, "dopri5"]:
        points = [(r["nfe"], r["error"]) for r in rows if r["method"] == method]
        ax.loglog(*zip(*points), marker="o", markersize=3, label=method)
    ax.set_xlabel("velocity calls (NFE)")
    ax.set_ylabel("max |error| at t = 1")
    ax.set_title("Gaussian flow, fp64")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def accuracy_markdown(rows: list[dict]) -> str:
    """`accuracy_table` rows as a Markdown table."""
    lines = ["| method | steps | NFE | max error | observed order |", "|---|---|---|---|---|"]
    for r in rows:
        order = "" if math.isnan(r["order"]) else f"{r['order']:.2f}"
        lines.append(f"| {r['method']} | {r['steps']} | {r['nfe']} | {r['error']:.2e} | {order} |")
    return "\n".join(lines)


def overhead_markdown(repeats: int, steps: int = 10, shape: tuple[int, ...] = (1, 4, 32, 32)) -> str:
    """`overhead_ratio` for every fixed-step method, as a Markdown table."""
    latent = "x".join(map(str, shape))
    lines = [
        "| method | latent | steps | ms per velocity call | integrate / bare calls | integrate's own us per call"
        " | implied ratio at 1 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in FIXED:
        ratio, ms, us = overhead_ratio(method, steps, shape, repeats)
        lines.append(f"| {method} | {latent} fp32 | {steps} | {ms:.2f} | {ratio:.3f} | {us:.1f} | {1 + us / 1000:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", type=Path, default=None, help="write the error-vs-NFE PNG here")
    parser.add_argument("--repeats", type=int, default=7, help="timing repeats (median)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = accuracy_table([4, 8, 16, 32, 64], [1e-3, 1e-5, 1e-7, 1e-9])
    report = [accuracy_markdown(rows), overhead_markdown(args.repeats)]
    if args.plot is not None:
        plot(rows, args.plot)
        report.append(f"plot: {args.plot}")
    print("\n\n".join(report))  # the CLI's output


if __name__ == "__main__":
    main()
