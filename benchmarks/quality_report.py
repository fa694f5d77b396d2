"""Markdown tables and the RMSE-vs-NFE plot of `benchmarks.quality` runs."""

from __future__ import annotations

import json
from pathlib import Path


def _fmt(run) -> str:
    return "n/a" if run is None else f"{run.rmse:.3f}"


def reference_ode(table: dict) -> dict:
    """The runs that solve the reference's ODE: guidance-interval runs solve another one, so
    their RMSE against the reference is not an accuracy."""
    return {(config, budget): run for (config, budget), run in table.items() if not config.guidance}


def best(table: dict, budget: int, family: str | None = None):
    """The lowest-RMSE run at `budget`."""
    runs = [run for (config, b), run in table.items() if b == budget and run is not None
            and (family is None or config.family == family)]
    return min(runs, key=lambda r: r.rmse, default=None)


def most_adherent(table: dict, budget: int, family: str):
    """The run with the highest adherence at `budget` (ties: the lower RMSE)."""
    runs = [run for (config, b), run in table.items() if b == budget and run is not None and config.family == family]
    return min(runs, key=lambda r: (-r.adherence, r.rmse), default=None)


def adherence_markdown(table: dict, budgets: list[int]) -> str:
    lines = ["| NFE | most adherent native | adherence | seen / held-out | pack's most adherent | adherence | "
             "seen / held-out |", "|---|---|---|---|---|---|---|"]
    for budget in budgets:
        cells = []
        for family in ("native", "pack"):
            run = most_adherent(table, budget, family)
            cells += ["n/a"] * 3 if run is None else [
                f"{run.config.label.split(' ', 1)[1]} ({run.nfe} NFE)", f"{run.adherence:.0%}",
                f"{run.adherence_seen:.0%} / {run.adherence_held_out:.0%}"]
        lines.append(f"| {budget} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_markdown(table: dict, budgets: list[int]) -> str:
    lines = ["| NFE | best native | RMSE | adherence | pack's best | RMSE | adherence | pack / native |",
             "|---|---|---|---|---|---|---|---|"]
    for budget in budgets:
        native, pack = best(table, budget, "native"), best(table, budget, "pack")
        ratio = f"{pack.rmse / native.rmse:.2f}" if native and pack else "n/a"
        cells = []
        for run in (native, pack):
            cells += ["n/a", "n/a", "n/a"] if run is None else [
                f"{run.config.label.split(' ', 1)[1]} ({run.nfe} NFE)", f"{run.rmse:.3f}", f"{run.adherence:.0%}"]
        lines.append(f"| {budget} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


def grid_markdown(table: dict, budgets: list[int], value) -> str:
    configs = list(dict.fromkeys(config for config, _ in table))
    lines = ["| sampler, schedule, shift | " + " | ".join(f"{b} NFE" for b in budgets) + " |",
             "|---|" + "---|" * len(budgets)]
    for config in configs:
        cells = [value(table.get((config, b))) for b in budgets]
        lines.append(f"| {config.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def midpoint_markdown(table: dict, budgets: list[int]) -> str:
    """The midpoints against euler at equal NFE, each on its best schedule (the pack's euler on
    ComfyUI's sigmas is bit-identical to native euler, so native euler rows count as its)."""
    solvers = {"euler": ("euler",), "midpoint (textbook, t)": ("midpoint",), "flow_midpoint": ("flow_midpoint",)}
    lines = ["| NFE | " + " | ".join(f"{name}: best schedule | RMSE" for name in solvers) + " |",
             "|---|" + "---|---|" * len(solvers)]
    for budget in budgets:
        cells = []
        for names in solvers.values():
            runs = [run for (config, b), run in table.items() if b == budget and run is not None
                    and config.sampler in names and (config.family == "pack" or config.sampler == "euler")]
            run = min(runs, key=lambda r: r.rmse, default=None)
            cells += ["n/a", "n/a"] if run is None else [run.config.label.split(", ", 1)[1], f"{run.rmse:.3f}"]
        lines.append(f"| {budget} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(table: dict, budgets: list[int], path: Path, model: str = "bundled model, cfg 4") -> None:
    """RMSE vs NFE: best native and the pack's best per budget, and each family's per-solver best."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=100)
    samplers = dict.fromkeys((config.family, config.sampler) for config, _ in table)
    for family, sampler in samplers:
        points = []
        for budget in budgets:
            runs = [r for (c, b), r in table.items()
                    if b == budget and r and c.family == family and c.sampler == sampler]
            if runs:
                points.append((budget, min(r.rmse for r in runs)))
        if points:
            ax.plot(*zip(*points), color="tab:gray" if family == "native" else "tab:blue", alpha=0.35, linewidth=0.8)
    for family, color in (("native", "black"), ("pack", "tab:red")):
        points = [(b, best(table, b, family).rmse) for b in budgets if best(table, b, family)]
        if points:
            ax.plot(*zip(*points), color=color, marker="o", linewidth=2, label=f"best {family}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("model evaluations (NFE)")
    ax.set_ylabel("RMSE vs converged reference")
    ax.set_title(f"{model}, 32 prompt/seed pairs (thin: per sampler, best schedule)")
    ax.title.set_fontsize(9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(bench, table: dict, budgets: list[int], report: Path | None, plot_path: Path | None) -> str:
    reference = json.loads((bench.results / "reference.json").read_text())
    accuracy = reference_ode(table)
    text = "\n\n".join([
        f"Reference: {json.dumps(reference)}",
        "### Best at each budget\n\n" + summary_markdown(accuracy, budgets),
        "### Most adherent at each budget (guidance-interval runs included)\n\n" + adherence_markdown(table, budgets),
        "### Midpoints vs euler at equal NFE (each on its best schedule)\n\n" + midpoint_markdown(accuracy, budgets),
        "### RMSE (every configuration)\n\n" + grid_markdown(table, budgets, _fmt),
        "### Adherence\n\n" + grid_markdown(table, budgets, lambda r: "n/a" if r is None else f"{r.adherence:.0%}"),
        "### NFE used\n\n" + grid_markdown(table, budgets, lambda r: "n/a" if r is None else str(r.nfe)),
    ])
    if report is not None:
        report.write_text(text + "\n")
    if plot_path is not None:
        plot(accuracy, budgets, plot_path, f"{bench.bundled.path.stem}, cfg {bench.cfg:g}")
    print(text)  # the CLI's output
    return text
