"""The solver methods as data: one record per method, run by the engine in `solvers`.

Two families (the convention is in `samplers/__init__`):

- Textbook methods step the velocity dx/dt in seed time t (kind "tableau": an explicit
  Runge-Kutta tableau; "adaptive": dopri5). They are general ODE solvers, kept for teaching
  and for non-flow fields. On a trained flow the velocity is stiff near the data end (an
  x-prediction model's velocity carries 1 / (1 - t)), so at small budgets they lose to
- flow-aware methods (variable "sigma"): the flow ODE in data-prediction form with its linear
  part solved exactly (`samplers.exponential`), the data estimate D interpolated by a
  polynomial in u = -log(sigma) through points the method chooses. Each step starts with the
  point at the interval's start (unless the method reuses one), adds its `stages` (fractions
  of the interval in sigma, each predicted from the points so far) and ends with the
  polynomial through the last `order` points. Multistep methods keep `history` points from earlier steps.
  The ends: at sigma = 1 nothing is special (D there is the model's estimate of the mean
  image, and u = -log(sigma) = 0); an interval ending at sigma = 0 returns the data estimate
  of its point nearest to 0 (the exact x(0) = D(x(0), 0) with D held constant), so the model
  is never called at sigma = 0; flow_midpoint puts its stage there at 0.1 sigma_a instead of
  the middle (`LAST_STAGE`). An interval must not start at
  sigma = 0 (x / sigma is singular there): these methods generate, they do not invert from data.

euler is both: one velocity step in t equals the one-point exponential step exactly (in
exact arithmetic); it runs as the tableau so it stays bit-identical to ComfyUI's euler.
"""

from __future__ import annotations

from dataclasses import dataclass

TABLEAU, MULTISTEP, ADAPTIVE = "tableau", "multistep", "adaptive"


@dataclass(frozen=True)
class Tableau:
    """Explicit Runge-Kutta coefficients: stage nodes c, rows a (stage i uses a[i][j] * k_j),
    weights b. Stage 0 is (x, t0) itself."""

    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]


@dataclass(frozen=True)
class Method:
    """One solver.

    name: the key in `METHODS` and the node's combo value.
    order: global order of accuracy (tests check it on analytic flows).
    calls_per_step: model calls per step (None: adaptive); `extra_calls` are added once per run.
    kind: "tableau" (single-step), "multistep" or "adaptive".
    variable: "t" (steps the velocity in seed time) or "sigma" (data prediction, exact linear part).
    evaluates_end: whether a stage sits at the interval's end (needs a velocity at sigma = 0).
    tableau: the Runge-Kutta coefficients of a "t" tableau method.
    stages, history, reuse_stage, first_stages: the plan of a "sigma" method (module docstring);
        first_stages replaces `stages` on the first step (a multistep method's warm-up).
    last_stages: replaces `stages` on an interval ending at sigma = 0 (see FLOW_MIDPOINT).
    summary: one line for tooltips and docs.
    """

    name: str
    order: int
    calls_per_step: int | None
    kind: str
    variable: str
    evaluates_end: bool
    summary: str
    tableau: Tableau | None = None
    stages: tuple[float, ...] = ()
    history: int = 0
    reuse_stage: bool = False
    first_stages: tuple[float, ...] | None = None
    last_stages: tuple[float, ...] | None = None
    extra_calls: int = 0

    def stages_on(self, step: int, s_to: float) -> tuple[float, ...]:
        """The stages of step `step` (0-based), which ends at sigma `s_to`."""
        if s_to == 0 and self.last_stages is not None:
            return self.last_stages
        if step == 0 and self.first_stages is not None:
            return self.first_stages
        return self.stages

    def nfe(self, steps: int) -> int:
        """Model calls over `steps` intervals (not adaptive)."""
        if self.calls_per_step is None:
            raise ValueError(f"{self.name} is adaptive: its model calls are known only after the run")
        return self.calls_per_step * steps + (self.extra_calls if steps > 0 else 0)


LAST_STAGE = 0.9
"""flow_midpoint's stage on an interval [sigma_a, 0]: at 0.1 sigma_a. Such a step returns the
data estimate of its point nearest to 0 (the exact x(0) = D(x(0), 0) with D held from there,
as every flow-aware method does), so the stage decides how finished the output is: it is
two Euler steps, sigma_a -> 0.1 sigma_a -> 0, not a midpoint. Measured on the bundled model
(cfg 4, 3 steps, each on its best grid over 16 candidates, 16 prompt/noise pairs apart from
the benchmark's): RMSE 0.186 with the stage at 0.5 sigma_a, 0.166 at 0.35, 0.141 at 0.2,
0.134 at 0.1; euler at the same 6 calls on its searched grid 0.142."""


def _rk(c, a, b) -> Tableau:
    return Tableau(tuple(c), tuple(tuple(row) for row in a), tuple(b))


EULER = Method(
    "euler", 1, 1, TABLEAU, "t", False, "Euler: 1 call per step; = ComfyUI's euler and the first-order exponential step",
    tableau=_rk([0.0], [()], [1.0]),
)
MIDPOINT = Method(
    "midpoint", 2, 2, TABLEAU, "t", False, "textbook explicit midpoint on the velocity in t (2 calls per step)",
    tableau=_rk([0.0, 0.5], [(), (0.5,)], [0.0, 1.0]),
)
HEUN = Method(
    "heun", 2, 2, TABLEAU, "t", True, "textbook Heun (trapezoid) on the velocity in t (2 calls per step)",
    tableau=_rk([0.0, 1.0], [(), (1.0,)], [0.5, 0.5]),
)
RK3 = Method(
    "rk3", 3, 3, TABLEAU, "t", False, "Ralston's third-order Runge-Kutta in t (3 calls per step)",
    tableau=_rk([0.0, 0.5, 0.75], [(), (0.5,), (0.0, 0.75)], [2 / 9, 1 / 3, 4 / 9]),
)
RK4 = Method(
    "rk4", 4, 4, TABLEAU, "t", True, "classic fourth-order Runge-Kutta in t (4 calls per step)",
    tableau=_rk([0.0, 0.5, 0.5, 1.0], [(), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)], [1 / 6, 1 / 3, 1 / 3, 1 / 6]),
)
DOPRI5 = Method("dopri5", 5, None, ADAPTIVE, "t", True, "adaptive Dormand-Prince 5(4) in t: picks its own steps")
FLOW_MIDPOINT = Method(
    "flow_midpoint", 2, 2, TABLEAU, "sigma", False,
    "second-order single-step exponential midpoint in data-prediction form (2 calls per step)",
    stages=(0.5,), last_stages=(LAST_STAGE,),
)
FLOW_2M = Method(
    "flow_2m", 2, 1, MULTISTEP, "sigma", False,
    "second-order data-prediction multistep, DPM-Solver++(2M)-like (1 call per step)",
    history=1,
)
FLOW_3M = Method(
    "flow_3m", 3, 1, MULTISTEP, "sigma", False,
    "third-order data-prediction multistep (1 call per step; its first step adds a midpoint call)",
    history=2, first_stages=(0.5,), extra_calls=1,
)
FLOW_REUSE = Method(
    "flow_reuse", 2, 1, TABLEAU, "sigma", False,
    "velocity-reuse midpoint (FireFlow) in data-prediction form: 1 call per step after the first",
    stages=(0.5,), reuse_stage=True, extra_calls=1,
)

METHODS: dict[str, Method] = {m.name: m for m in (
    EULER, MIDPOINT, HEUN, RK3, RK4, DOPRI5, FLOW_MIDPOINT, FLOW_2M, FLOW_3M, FLOW_REUSE,
)}
"""Solver name -> method record."""

FLOW_AWARE = tuple(name for name, m in METHODS.items() if m.variable == "sigma")
TEXTBOOK = tuple(name for name, m in METHODS.items() if m.variable == "t")


def nfe_for(method: str, steps: int) -> int:
    """Model calls a fixed-step `method` makes over `steps` intervals."""
    if method not in METHODS or METHODS[method].calls_per_step is None:
        fixed = sorted(name for name, m in METHODS.items() if m.calls_per_step is not None)
        raise ValueError(f"nfe_for: method must be a fixed-step one of {fixed}, got {method!r}")
    return METHODS[method].nfe(steps)
