"""`python -m comfyui_flowmatch <command> ...`: generate (no ComfyUI) or queue (a ComfyUI batch).

Each command is a `main(argv)` resolved lazily, so `queue` never imports torch, and
``OMP_WAIT_POLICY=PASSIVE`` (unless set) reaches OpenMP before torch loads it: idle threads
sleep instead of spinning on cores a server or another job shares.
"""

from __future__ import annotations

import importlib
import os
import sys

COMMANDS = {
    "generate": (".models.generate", "main", "text-to-image with the bundled model, without ComfyUI"),
    "queue": (".client.cli", "main", "run a prompts file through a workflow on ComfyUI servers"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        lines = [f"  {name:<9} {help_text}" for name, (_, _, help_text) in COMMANDS.items()]
        print("usage: python -m comfyui_flowmatch {" + ",".join(COMMANDS) + "} ...\n" + "\n".join(lines), file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    module, function = COMMANDS[argv[0]][:2]
    return getattr(importlib.import_module(module, __package__), function)(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
