"""Flow-matching ODE solvers, time grids and the bridge to ComfyUI's samplers. Pure torch.

Convention (the seed's, and facebookresearch/flow_matching's):
    x_t = (1 - t) * noise + t * data,   t = 0 noise, t = 1 data,
    velocity v = dx/dt = data - noise,  data estimate x1_hat = x + (1 - t) * v.
Integrating with ascending t generates (noise -> data); descending t inverts (data -> noise).

ComfyUI and diffusers use sigma = 1 - t (sigma = 1 noise, sigma = 0 data) and their flow
models output the opposite sign (noise - data); ComfyUI's samplers see the data estimate
D(x, sigma) = x - sigma * output, so v = (D - x) / sigma. Every conversion lives in
`conventions`; only `comfy_bridge` (and the nodes that wrap a network) use them.

Example, with your `velocity(x, t)` and a noise latent:
    ts = time_grid(28, shift=SD3_SHIFT)                  # or mu=flux_mu(flux_tokens(w, h))
    solution = integrate(velocity, noise, ts, "flow_2m")  # solution.state, solution.nfe == 28

Methods are records in `methods` (textbook ones step the velocity in t; flow-aware ones,
`FLOW_AWARE`, step the data estimate in sigma with the linear part exact, `exponential`).
"""

from .comfy_bridge import LAST_STEP, sample_flow
from .conventions import (
    comfy_from_velocity,
    data_from_velocity,
    denoised_from_velocity,
    sigma_from_t,
    t_from_sigma,
    velocity_from_comfy,
    velocity_from_denoised,
)
from .schedules import (
    AURAFLOW_SHIFT,
    SD3_SHIFT,
    flux_mu,
    flux_shift,
    flux_tokens,
    grid_from_list,
    sd3_shift,
    time_grid,
)
from .methods import FLOW_AWARE, METHODS, TEXTBOOK, Method, nfe_for
from .solvers import Solution, Trajectory, integrate

__all__ = [
    "AURAFLOW_SHIFT",
    "FLOW_AWARE",
    "LAST_STEP",
    "METHODS",
    "Method",
    "SD3_SHIFT",
    "Solution",
    "TEXTBOOK",
    "Trajectory",
    "comfy_from_velocity",
    "data_from_velocity",
    "denoised_from_velocity",
    "flux_mu",
    "flux_shift",
    "flux_tokens",
    "grid_from_list",
    "integrate",
    "nfe_for",
    "sample_flow",
    "sd3_shift",
    "sigma_from_t",
    "t_from_sigma",
    "time_grid",
    "velocity_from_comfy",
    "velocity_from_denoised",
]
