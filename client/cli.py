"""`python -m comfyui_flowmatch queue WORKFLOW --prompts FILE --out DIR --server URL [--server URL ...]`."""

from __future__ import annotations

import argparse
import logging
import sys

from tqdm.contrib.logging import logging_redirect_tqdm

from ..models.cli_args import CLIParser, finite_float, int_in
from .api import ServerUnavailable
from .batch import run_queue
from .jobs import SeedPlan
from .runner import QueueSettings

EXIT_OK, EXIT_FAILURES, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    parser = CLIParser(
        prog="python -m comfyui_flowmatch queue",
        description="Queue one job per prompts-file row on ComfyUI servers; resumable (rerun the same command).",
    )
    parser.add_argument("workflow", help="API-format or UI-format workflow JSON")
    parser.add_argument("--prompts", required=True, help="prompts file: .txt (one prompt a line), .csv or .jsonl")
    parser.add_argument("--out", required=True, help="output folder: images, sidecars, queue-state.jsonl")
    parser.add_argument("--server", action="append", required=True, help="ComfyUI URL (repeat for several servers)")
    parser.add_argument("--seed", type=seed_plan, help="42 (fixed), 100-199 (a range over the jobs), or 'derived' (default)")
    parser.add_argument("--seed-input", action="append", help="NODE.INPUT that takes the seed (default: seed/noise_seed inputs)")
    parser.add_argument("--repeat", type=int_in(1, 10_000), default=1, help="jobs per row (a row's or fixed seed + 0, 1, ...)")
    parser.add_argument("--depth", type=int_in(1, 1000), default=QueueSettings.depth, help="jobs queued per server at once")
    parser.add_argument("--grace", type=finite_float(0), default=QueueSettings.grace_s,
                        help="seconds a server may be unreachable before its jobs move to other servers")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def seed_plan(text: str) -> SeedPlan:
    """An argparse type: `SeedPlan.parse`, its ValueError as a usage error."""
    try:
        return SeedPlan.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main(argv: list[str] | None = None) -> int:
    """Run the batch; exit 0 if every job finished, 1 with failures or invalid rows, 2 on setup errors, 130 on Ctrl-C."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    settings = QueueSettings(depth=args.depth, grace_s=args.grace, progress=not args.no_progress)
    try:
        with logging_redirect_tqdm():
            summary = run_queue(args.workflow, args.prompts, args.out, args.server, args.seed, args.repeat,
                                args.seed_input, settings)
    except (ValueError, OSError, ServerUnavailable) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted before any job was queued", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(summary.format())
    if summary.stopped and summary.stopped.startswith("interrupted"):
        return EXIT_INTERRUPTED
    return EXIT_OK if summary.ok else EXIT_FAILURES
