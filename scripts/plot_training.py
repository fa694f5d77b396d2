"""Plot a training run's loss curve for the docs.

    python scripts/plot_training.py runs/flowmatch_shapes docs/model_loss.png

Reads ``<run-dir>/log.jsonl`` (one ``{"step", "loss", "lr", "elapsed_s"}`` line per
logging interval, written by ``models.train``) and draws loss against training minutes
on a log scale, with the learning rate on a second axis.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_log(run_dir: Path) -> list[dict]:
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [r["elapsed_s"] / 60 for r in records]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    ax.plot(minutes, [r["loss"] for r in records], lw=1, color="tab:blue")
    ax.set_yscale("log")
    ax.set_xlabel("training time (min)")
    ax.set_ylabel("loss (logging-interval mean)", color="tab:blue")
    lr_axis = ax.twinx()
    lr_axis.plot(minutes, [r["lr"] for r in records], lw=1, color="tab:gray", ls="--")
    lr_axis.set_ylabel("learning rate", color="tab:gray")
    ax.set_title(f"{records[-1]['step']:,} steps")
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("output", type=Path)
    args = parser.parse_args()
    plot(read_log(args.run_dir), args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
