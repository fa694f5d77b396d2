"""Argument checks shared by the pack's command lines (generate, train, evaluate, benchmark).

Every check runs before any work: a bad argument ends the command with one line on
stderr, ``<prog>: error: <what is wrong and what to do>``, and exit code 2, the code
argparse uses for usage errors. `run_cli` gives errors found later (an unreadable
checkpoint, a train state that does not fit) the same shape instead of a traceback.
Importing this module imports neither torch nor PIL, so the batch client's CLI uses it too.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from PIL import Image

EXIT_ERROR, EXIT_INTERRUPTED = 2, 130
MAX_STEPS = 10_000
"""More solver steps than anyone needs at 32 px; the cap turns a typo (1e6) into an error, not a stuck run."""
MAX_SAVED_PIXELS = 64 * 2**20
"""Largest PNG grid `generate` saves (64 megapixels)."""
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP",
                 ".tif": "TIFF", ".tiff": "TIFF", ".gif": "GIF"}


class CLIParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (no usage block) and exit with code 2."""

    def error(self, message: str) -> None:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see --help)\n")


def int_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number in [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is outside [{low}, {high if high is not None else 'inf'}]")
        return value
    parse.__name__ = "whole number"
    return parse


def finite_float(minimum: float | None = None, above: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number, at least (or, with `above`, more than) `minimum`."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if minimum is not None and (value <= minimum if above else value < minimum):
            raise argparse.ArgumentTypeError(f"{value:g} must be {'>' if above else '>='} {minimum:g}")
        return value
    parse.__name__ = "number"
    return parse


def solver_name(text: str) -> str:
    """An argparse type: a `samplers` method name."""
    from ..samplers import METHODS

    if text not in METHODS:
        raise argparse.ArgumentTypeError(f"unknown solver {text!r}; choose one of {', '.join(sorted(METHODS))}")
    return text


def device_name(text: str) -> str:
    """An argparse type: a torch device that exists here (``cpu``, ``cuda``, ``cuda:1``)."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device (cpu, cuda, cuda:1)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count or not count:
            raise argparse.ArgumentTypeError(f"{text!r}: torch sees {count} CUDA device(s); use cpu")
    elif device.type != "cpu":
        raise argparse.ArgumentTypeError(f"{text!r}: only cpu and cuda devices are supported")
    return text


def writable_file(path: Path, suffixes: tuple[str, ...] | None = None) -> Path:
    """`path`, if it can be written: not a folder, a wanted suffix, its folder present or creatable.

    Raises:
        ValueError: which of those fails, naming the path.
    """
    if suffixes is not None and path.suffix.lower() not in suffixes:
        got = f"suffix {path.suffix!r}" if path.suffix else "no suffix"
        raise ValueError(f"{path}: {got}; use one of {', '.join(suffixes)}")
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a file name")
    writable_folder(path.parent)
    return path


def writable_folder(folder: Path) -> Path:
    """`folder`, if it exists as a writable folder or can be created (its nearest existing parent is one).

    Raises:
        ValueError: a file is in the way, or there is no write permission; names the path.
    """
    existing = folder
    while not existing.exists():
        if existing.is_symlink():
            raise ValueError(f"{existing} is a broken link; the folder {folder} cannot be created")
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{existing} is a file, so the folder {folder} cannot be created there")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"no permission to write in {existing} (for {folder})")
    return folder


def save_image_atomic(image: "Image.Image", path: Path) -> None:
    """Save `image` in the format of `path`'s suffix; readers see no file or the whole one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.part")
    try:
        image.save(temporary, format=IMAGE_FORMATS[path.suffix.lower()])
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def run_cli(prog: str, body: Callable[[], None]) -> int:
    """Run a command's `body`; a ValueError or OSError becomes one line on stderr and exit code 2."""
    try:
        body()
    except (ValueError, OSError) as error:
        logging.getLogger(__name__).debug("%s failed", prog, exc_info=True)
        print(f"{prog}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0
