"""Quick accuracy check of the solvers on the bundled model: `python scripts/solver_sanity.py`.

RMSE of the image (in [0, 1]) against a converged reference (rk4, 60 uniform steps) and the
share of adherent images (`models.evaluate.score`), per solver at equal model evaluations
(NFE): each solver gets the most steps that fit the budget. cfg 4, a uniform time grid (or
SD3-shifted with --shift), 4 seen and 4 held-out prompts, one seed. Prints a Markdown table
(docs/solvers.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from comfyui_flowmatch.models.checkpoint import load_checkpoint
from comfyui_flowmatch.models.evaluate import evaluation_prompts, score
from comfyui_flowmatch.models.generate import generate_images
from comfyui_flowmatch.samplers import METHODS

BUNDLED = Path(__file__).resolve().parents[1] / "models" / "weights" / "flowmatch_shapes.safetensors"
SOLVERS = ["euler", "midpoint", "flow_midpoint", "flow_2m", "flow_3m", "flow_reuse"]


def steps_for(method: str, nfe: int) -> int:
    """The most steps of `method` whose model calls fit in `nfe`."""
    spec = METHODS[method]
    return (nfe - spec.extra_calls) // spec.calls_per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="4,6,8,12,16", help="comma-separated NFE budgets")
    parser.add_argument("--solvers", default=",".join(SOLVERS))
    parser.add_argument("--cfg", type=float, default=4.0)
    parser.add_argument("--shift", type=float, default=1.0, help="SD3 shift of the grid (1 = uniform)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    bundle = load_checkpoint(BUNDLED, "cpu")
    prompts = evaluation_prompts("seen", 4, seed=7) + evaluation_prompts("held_out", 4, seed=7)
    reference = generate_images(bundle, prompts, steps=60, method="rk4", cfg=args.cfg, seed=0)
    solvers = args.solvers.split(",")
    print("| NFE | " + " | ".join(solvers) + " |")
    print("|---|" + "---|" * len(solvers))
    for nfe in (int(b) for b in args.budgets.split(",")):
        cells = []
        for method in solvers:
            images = generate_images(bundle, prompts, steps=steps_for(method, nfe), method=method, cfg=args.cfg, seed=0,
                                     shift=args.shift)
            rmse = float((images - reference).pow(2).mean().sqrt())
            cells.append(f"{rmse:.3f} / {score(images, prompts)['all']:.0%}")
        print(f"| {nfe} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
