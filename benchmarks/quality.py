"""Sampling quality at equal cost, in-process: ``python -m comfyui_flowmatch.benchmarks.quality``.

The bundled model runs inside ComfyUI exactly as FlowMatchModelLoader wraps it, with
ComfyUI's noise scaling and CFG guider (cfg 4), on 32 prompt/seed pairs (16 seen and 16
held-out captions from `models.evaluate.evaluation_prompts`, sample i's noise seeded
i, batched in one model call). Every configuration is a sampler, a schedule and a shift:

- native: every deterministic ComfyUI sampler (`NATIVE`) with KSampler's own sigmas
  (`simple`, `beta`; dpm_2 and uni_pc drop the penultimate sigma as KSampler does), on
  the model as loaded and behind ComfyUI's ModelSamplingSD3 node with shift 3;
- pack: the pack's solvers through `samplers.comfy_bridge.sample_flow` (what
  FlowMatchSampler runs) on the same sigmas, plus the searched `optimal` grids.

Each configuration gets, per NFE budget, the most steps whose counted NFE fit the budget
(the counts come from wrapping the denoiser, on a one-sample probe, and are checked again
on the real run); adaptive samplers get the loosest-first tolerance ladder `TOLERANCES`
and the run with the most NFE inside the budget. Scores: RMSE of the final latent
(model space, [-1, 1]) against a converged reference (the pack's rk4, `REFERENCE_STEPS`
uniform steps; its own convergence is reported), and adherence through
`models.evaluate.score`. Runs are stored in `--results` (one JSON line each), so a rerun
with more samplers or budgets only computes what is new.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .comfy_runtime import import_comfyui

logger = logging.getLogger(__name__)

NATIVE = ("euler", "heun", "heunpp2", "dpm_2", "lms", "dpm_fast", "dpmpp_2m", "res_multistep", "deis", "ipndm",
          "ipndm_v", "gradient_estimation", "uni_pc", "uni_pc_bh2", "dpm_adaptive")
NATIVE_SCHEDULES = ("simple", "beta")
SHIFTS = (None, 3.0)
PACK_SCHEDULES = (("simple", 3.0), ("beta", 3.0))
GUIDANCE_INTERVAL = "0.8-0.95"  # FlowMatchGuidanceInterval's defaults
GUIDED = ("euler", "flow_reuse")  # the pack's solvers also run behind the guidance interval
BUDGETS = (3, 4, 6, 8, 12, 16, 24)
ADAPTIVE = {"dpm_adaptive": "native", "dopri5": "pack"}
TOLERANCES = (0.5, 0.2, 0.1, 0.05, 0.02, 0.01)
REFERENCE_STEPS = (60, 30)  # the reference, and a coarser run that shows how converged it is
CFG = 4.0
PAIRS_PER_SPLIT = 16
DEFAULT_RESULTS = Path("benchmark_results")


@dataclass(frozen=True)
class Config:
    """One sampler on one schedule: family 'native' (a ComfyUI sampler) or 'pack' (our solver);
    `guidance` "low-high": CFG only for sigma in [low, high] (FlowMatchGuidanceInterval), which
    samples a different ODE than the cfg-4 reference, so those runs count for adherence only."""

    family: str
    sampler: str
    schedule: str
    shift: float | None
    guidance: str = ""

    @property
    def label(self) -> str:
        shift = "" if self.shift is None else f", shift {self.shift:g}"
        guidance = f", guidance sigma {self.guidance}" if self.guidance else ""
        return f"{self.family} {self.sampler}, {self.schedule}{shift}{guidance}"

    def stored(self) -> dict:
        """asdict without an empty `guidance`, so runs stored before the field keep their keys."""
        fields = asdict(self)
        if not self.guidance:
            del fields["guidance"]
        return fields


@dataclass(frozen=True)
class Run:
    config: Config
    steps: int | None  # None for adaptive runs
    tolerance: float | None
    nfe: int
    rmse: float
    adherence: float
    adherence_seen: float
    adherence_held_out: float
    seconds: float
    grid: str = ""  # for 'optimal': the searched record's settings hash, so a new search is rerun

    def key(self) -> str:
        return json.dumps([self.config.stored(), self.steps, self.tolerance, self.grid])


class Bench:
    """The model, prompts, noise and reference of one benchmark, and the runs done so far."""

    def __init__(self, results: Path, checkpoint: str | None = None, cfg: float = CFG):
        import comfy.samplers

        from ..models.evaluate import evaluation_prompts
        from ..models.generate import initial_noise
        from .comfy_runtime import batched_conditioning, load_bundled

        self.comfy_samplers = comfy.samplers
        self.cfg = cfg
        self.bundled = load_bundled(checkpoint)
        self.prompts = evaluation_prompts("seen", PAIRS_PER_SPLIT) + evaluation_prompts("held_out", PAIRS_PER_SPLIT)
        self.positive = batched_conditioning(self.bundled.clip, self.prompts)
        self.negative = batched_conditioning(self.bundled.clip, [""])
        side = self.bundled.model.model.diffusion_model.network.config.image_size
        self.noise = initial_noise(len(self.prompts), 3, side, side, seed=0)
        self.results = results
        results.mkdir(parents=True, exist_ok=True)
        self.runs: dict[str, Run] = {}
        self.log = results / "runs.jsonl"
        if self.log.exists():
            for line in self.log.read_text().splitlines():
                row = json.loads(line)
                run = Run(config=Config(**row.pop("config")), **row)
                self.runs[run.key()] = run
        self.models = {}
        probes = self.results / "probes.jsonl"  # counted NFE of one-sample probe runs, kept across reruns
        self.probes: dict[str, int] = dict(json.loads(line) for line in probes.read_text().splitlines()) \
            if probes.exists() else {}
        self.reference = self._reference()

    def model(self, shift: float | None, guidance: str = ""):
        """The bundled model behind ModelSamplingSD3 (`shift`) and FlowMatchGuidanceInterval (`guidance`)."""
        from .comfy_runtime import guidance_limited, shifted

        if (shift, guidance) not in self.models:
            model = shifted(self.bundled.model, shift)
            if guidance:
                low, high = (float(v) for v in guidance.split("-"))
                model = guidance_limited(model, low, high)
            self.models[(shift, guidance)] = model
        return self.models[(shift, guidance)]

    def sigmas(self, config: Config, steps: int) -> torch.Tensor:
        model = self.model(config.shift)
        if config.schedule == "optimal":
            return self.optimal_record(config.sampler).grid(steps)[0]
        name = config.sampler if config.family == "native" else "euler"
        return self.comfy_samplers.KSampler(model, steps, "cpu", name, config.schedule).sigmas.cpu()

    def optimal_record(self, method: str):
        """The shipped grid search for the bundled model and `method` at cfg 4 (what
        FlowMatchSampler's 'optimal' uses; `samplers.optimal.SEARCHED_AS` says which search)."""
        from ..nodes.optimal_schedule import model_fingerprint
        from ..samplers.optimal import searched_method, shipped_record

        searched = searched_method(method)
        record = shipped_record(model_fingerprint(self.bundled.model), searched, self.cfg)
        if record is None:
            raise SystemExit(f"no shipped optimal grid for {searched!r}: run python -m "
                             f"comfyui_flowmatch.models.optimal_schedule --solvers {searched} --ship")
        return record

    def has_optimal(self, method: str) -> bool:
        try:
            self.optimal_record(method)
        except SystemExit as missing:
            logger.warning("%s", missing)
            return False
        return True

    def sampler(self, config: Config, tolerance: float | None = None):
        if config.family == "native":
            options = {} if tolerance is None else {"rtol": tolerance, "atol": tolerance / 10}
            if config.sampler == "dpm_adaptive":
                return self.comfy_samplers.ksampler("dpm_adaptive", options)
            return self.comfy_samplers.sampler_object(config.sampler)
        from ..samplers.comfy_bridge import sample_flow

        options = {"method": config.sampler}
        if tolerance is not None:
            options.update(rtol=tolerance, atol=tolerance / 10)
        return self.comfy_samplers.KSAMPLER(sample_flow, extra_options=options)

    def _sample(self, config: Config, sigmas: torch.Tensor, count: int | None = None, tolerance: float | None = None):
        from .comfy_runtime import sample

        positive = self.positive if count is None else [[self.positive[0][0][:count], {
            k: (v[:count] if torch.is_tensor(v) else v) for k, v in self.positive[0][1].items()}]]
        noise = self.noise if count is None else self.noise[:count]
        return sample(self.model(config.shift, config.guidance), self.sampler(config, tolerance), sigmas, positive,
                      self.negative, noise, self.cfg)

    def probe_nfe(self, config: Config, steps: int) -> int:
        """Counted NFE of `steps` steps, on a one-sample batch (NFE does not depend on the batch)."""
        key = f"{config.family} {config.sampler} {steps}"
        if key not in self.probes:
            plain = Config(config.family, config.sampler, "simple", None)
            self.probes[key] = self._sample(plain, self.sigmas(plain, steps), count=1)[1]
            with (self.results / "probes.jsonl").open("a") as log:
                log.write(json.dumps([key, self.probes[key]]) + "\n")
        return self.probes[key]

    def steps_for(self, config: Config, budget: int) -> int | None:
        """The most steps whose NFE fit `budget` (None: not even one step fits)."""
        low, high = 0, budget  # every sampler makes at least one model call per step
        while low < high:
            middle = (low + high + 1) // 2
            if self.probe_nfe(config, middle) <= budget:
                low = middle
            else:
                high = middle - 1
        return low or None

    def score(self, latent: torch.Tensor) -> dict[str, float]:
        from ..models.evaluate import score

        images = ((latent + 1) / 2).clamp(0, 1)
        half = PAIRS_PER_SPLIT
        seen, held = score(images[:half], self.prompts[:half]), score(images[half:], self.prompts[half:])
        return {
            "rmse": float((latent - self.reference).pow(2).mean().sqrt()) if self.reference is not None else float("nan"),
            "adherence": (seen["all"] + held["all"]) / 2,
            "adherence_seen": seen["all"],
            "adherence_held_out": held["all"],
        }

    def grid_id(self, config: Config) -> str:
        if config.schedule != "optimal":
            return ""
        from ..samplers.optimal import SearchSettings, settings_key

        record = self.optimal_record(config.sampler)
        return settings_key(record.model, SearchSettings(**record.settings))

    def run(self, config: Config, steps: int | None, tolerance: float | None = None) -> Run:
        probe = Run(config, steps, tolerance, 0, 0, 0, 0, 0, 0, self.grid_id(config))
        if probe.key() in self.runs:
            return self.runs[probe.key()]
        sigmas = self.sigmas(config, steps) if steps is not None else self.sigmas(config, 8)
        start = time.perf_counter()
        latent, nfe = self._sample(config, sigmas, tolerance=tolerance)
        run = Run(config, steps, tolerance, nfe, seconds=time.perf_counter() - start, grid=probe.grid, **self.score(latent))
        self.runs[run.key()] = run
        with self.log.open("a") as log:
            log.write(json.dumps(asdict(run)) + "\n")
        logger.info("%s steps=%s tol=%s: NFE %d, RMSE %.4f, adherence %.0f%% (%.1f s)", config.label, steps, tolerance,
                    nfe, run.rmse, 100 * run.adherence, run.seconds)
        return run

    def _reference(self) -> torch.Tensor | None:
        path = self.results / "reference.safetensors"
        if path.exists():
            return load_file(path)["reference"]
        self.reference = None
        latents = []
        for steps in REFERENCE_STEPS:
            config = Config("pack", "rk4", "simple", None)
            start = time.perf_counter()
            latent, nfe = self._sample(config, self.sigmas(config, steps))
            logger.info("reference rk4 %d steps: NFE %d (%.0f s)", steps, nfe, time.perf_counter() - start)
            latents.append(latent)
        reference, coarse = latents
        (self.results / "reference.json").write_text(json.dumps({
            "solver": "rk4", "steps": REFERENCE_STEPS[0], "schedule": "simple (uniform)",
            "rmse_of_half_the_steps": float((coarse - reference).pow(2).mean().sqrt()),
            "adherence": self.score_against(reference),
        }, indent=1))
        save_file({"reference": reference.contiguous()}, path)
        return reference

    def score_against(self, latent: torch.Tensor) -> float:
        from ..models.evaluate import score

        return score(((latent + 1) / 2).clamp(0, 1), self.prompts)["all"]

    def choose(self, config: Config, budget: int) -> Run | None:
        """`best_within`, recorded in choices.jsonl so `--report-only` can rebuild the tables."""
        run = self.best_within(config, budget)
        with (self.results / "choices.jsonl").open("a") as log:
            log.write(json.dumps({"config": asdict(config), "budget": budget, "run": run.key() if run else None}) + "\n")
        return run

    def stored_table(self) -> dict:
        table = {}
        path = self.results / "choices.jsonl"
        for line in path.read_text().splitlines() if path.exists() else []:
            choice = json.loads(line)
            table[(Config(**choice["config"]), choice["budget"])] = self.runs.get(choice["run"]) if choice["run"] else None
        return table

    def best_within(self, config: Config, budget: int) -> Run | None:
        """The configuration's run for `budget`: most steps that fit (adaptive: most NFE within)."""
        if config.sampler in ADAPTIVE:
            fitting = []
            for tolerance in TOLERANCES:
                run = self.run(config, None, tolerance)
                if run.nfe <= budget:
                    fitting.append(run)
                if run.nfe > max(BUDGETS):
                    break
            return max(fitting, key=lambda r: r.nfe, default=None)
        steps = self.steps_for(config, budget)
        while steps:
            run = self.run(config, steps)
            if run.nfe <= budget:
                return run
            logger.warning("%s: %d steps took %d NFE on the full batch, over %d; one step fewer", config.label, steps,
                           run.nfe, budget)
            steps -= 1
        return None


def configs(families: list[str], samplers: list[str] | None, pack_methods: list[str], optimal,
            shifts: tuple = SHIFTS) -> list[Config]:
    """Native: every sampler x schedule x shift. Pack: every solver on `PACK_SCHEDULES` and its
    searched grid; pack euler on ComfyUI's sigmas is bit-identical to native euler, so only
    its searched grid is run; the `GUIDED` solvers also on `PACK_SCHEDULES` behind the guidance interval."""
    out = []
    if "native" in families:
        out += [Config("native", s, sched, shift) for shift in shifts[::-1] for s in NATIVE for sched in NATIVE_SCHEDULES]
    if "pack" in families:
        for method in pack_methods:
            if method != "euler":
                out += [Config("pack", method, sched, shift) for sched, shift in PACK_SCHEDULES]
            if method not in ADAPTIVE and optimal(method):  # an adaptive solver picks its own steps
                out.append(Config("pack", method, "optimal", None))
            if method in GUIDED:
                out += [Config("pack", method, sched, shift, GUIDANCE_INTERVAL) for sched, shift in PACK_SCHEDULES]
    return [c for c in out if samplers is None or c.sampler in samplers]


def main(argv: list[str] | None = None) -> None:
    from .quality_report import write_report

    parser = argparse.ArgumentParser(prog="python -m comfyui_flowmatch.benchmarks.quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="folder for runs.jsonl and the reference")
    parser.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS))
    parser.add_argument("--families", nargs="+", default=["native", "pack"], choices=["native", "pack"])
    parser.add_argument("--samplers", nargs="+", default=None, help="only these samplers / solvers")
    parser.add_argument("--pack-methods", nargs="+", default=None, help="the pack's solvers (default: all)")
    parser.add_argument("--schedules", nargs="+", default=None, help="only these schedules (simple, beta, optimal)")
    parser.add_argument("--no-optimal", action="store_true", help="skip the searched 'optimal' grids")
    parser.add_argument("--native-shifts", nargs="+", default=["none", "3"],
                        help="ModelSamplingSD3 shifts for the native samplers ('none': the model as loaded)")
    parser.add_argument("--report", type=Path, default=None, help="write the Markdown tables here")
    parser.add_argument("--report-only", action="store_true",
                        help="no sampling: tables of every (configuration, budget) stored in --results so far")
    parser.add_argument("--plot", type=Path, default=None, help="write the RMSE-vs-NFE PNG here")
    parser.add_argument("--comfyui", default=None, help="ComfyUI tree (default: $COMFYUI_PATH or the repo's .comfyui)")
    parser.add_argument("--checkpoint", default=None, help="default: the bundled model")
    parser.add_argument("--cfg", type=float, default=CFG,
                        help="guidance scale (1 for the reflowed checkpoint, whose guidance is baked in)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import_comfyui(args.comfyui)
    from ..samplers.methods import METHODS

    started = time.perf_counter()
    bench = Bench(args.results, args.checkpoint, args.cfg)
    if args.report_only:
        write_report(bench, bench.stored_table(), sorted(args.budgets), args.report, args.plot)
        return
    table = {}
    shifts = tuple(None if s == "none" else float(s) for s in args.native_shifts)
    chosen = configs(args.families, args.samplers, args.pack_methods or list(METHODS),
                     lambda method: not args.no_optimal and bench.has_optimal(method), shifts)
    chosen = [c for c in chosen if args.schedules is None or c.schedule in args.schedules]
    for budget in sorted(args.budgets):  # a stopped run has whole columns for the smaller budgets
        for config in chosen:
            table[(config, budget)] = bench.choose(config, budget)
    write_report(bench, table, sorted(args.budgets), args.report, args.plot)
    logger.info("done in %.0f s", time.perf_counter() - started)


if __name__ == "__main__":
    main()
