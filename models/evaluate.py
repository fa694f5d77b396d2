"""Prompt adherence, judged analytically (``python -m comfyui_flowmatch.models.evaluate``).

`judge(image, caption)` reads an image [3, H, W] in [0, 1] the way the procedural
data was drawn: the background is the palette background nearest the median border
pixel; foreground pixels differ from that background color by more than
`FOREGROUND_DISTANCE`; the color is the palette color most foreground pixels are
nearest to; the shape is the template (circle, square, triangle, drawn in the
bounding box of the largest foreground blob) with the best IoU; the position is the
region holding the center of the blob's bounding box.

The CLI generates prompts for seen and held-out color/shape combinations, samples
them per solver and step count through `generate_images` and reports adherence
(color, shape and background all right) and position accuracy per split.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections import deque
from pathlib import Path

import numpy as np
import torch

from .cli_args import MAX_STEPS, CLIParser, finite_float, int_in, run_cli, writable_file
from .data import BACKGROUNDS, COLORS, HELD_OUT, POSITIONS, SEEN, SHAPES, make_caption, position_of, shape_mask

logger = logging.getLogger(__name__)

FOREGROUND_DISTANCE = 60.0  # RGB distance (0-255 scale) from the background color
_CAPTION_RE = re.compile(
    r"^an? (?P<color>\w+) (?P<shape>\w+) on a (?P<background>\w+) background"
    r"(?: in the (?P<position>top left|top right|bottom left|bottom right|center))?$"
)


def parse_caption(caption: str) -> dict[str, str | None]:
    """``"a red circle on a black background in the center"`` -> attribute dict.

    Returns:
        ``{"color", "shape", "background", "position"}``; position is None when absent.

    Raises:
        ValueError: the caption does not follow the dataset grammar or names an unknown value.
    """
    match = _CAPTION_RE.match(caption.strip().lower())
    if not match:
        raise ValueError(f"caption {caption!r} does not match 'a {{color}} {{shape}} on a {{background}} "
                         f"background[ in the {{position}}]'")
    attrs = match.groupdict()
    for key, known in (("color", COLORS), ("shape", SHAPES), ("background", BACKGROUNDS)):
        if attrs[key] not in known:
            raise ValueError(f"caption {caption!r}: unknown {key} {attrs[key]!r}; expected one of {sorted(known)}")
    return attrs


def _nearest(rgb: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> np.ndarray:
    """Index into `palette` of the nearest color for each row of rgb [N, 3]."""
    table = np.array(list(palette.values()), dtype=np.float32)
    return np.argmin(((rgb[:, None, :] - table[None]) ** 2).sum(-1), axis=1)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a boolean [H, W] mask."""
    labels = np.zeros(mask.shape, dtype=np.int32)
    best, best_size, label = 0, 0, 0
    h, w = mask.shape
    for start in zip(*np.nonzero(mask)):
        if labels[start]:
            continue
        label += 1
        labels[start] = label
        queue, size = deque([start]), 0
        while queue:
            y, x = queue.popleft()
            size += 1
            for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = label
                    queue.append((ny, nx))
        if size > best_size:
            best, best_size = label, size
    return labels == best


def classify_shape(blob: np.ndarray) -> str:
    """The `SHAPES` template with the best IoU against a boolean [H, W] blob."""
    ys, xs = np.nonzero(blob)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half_span = max(x1 - x0, y1 - y0, 1) / 2
    target = torch.from_numpy(blob)
    scores = {}
    for shape in SHAPES:
        # Pixel sampling leaves the true radius between the half span and half the pixel extent.
        scores[shape] = max(_iou(shape_mask(shape, cx, cy, r, *blob.shape), target)
                            for r in (half_span, half_span + 0.5))
    return max(scores, key=scores.get)


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a & b).sum().item() / max(1, (a | b).sum().item())


def analyze(image: torch.Tensor) -> dict[str, str | None]:
    """Detected attributes of an image [3, H, W] in [0, 1]: color, shape, background, position.

    Values are None when there is no foreground at all.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be [3, H, W], got {tuple(image.shape)}")
    pixels = image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    bg_rgb = np.median(border, axis=0)
    background = list(BACKGROUNDS)[_nearest(bg_rgb[None], BACKGROUNDS)[0]]
    foreground = np.sqrt(((pixels - bg_rgb) ** 2).sum(-1)) > FOREGROUND_DISTANCE
    if not foreground.any():
        return {"color": None, "shape": None, "background": background, "position": None}
    votes = np.bincount(_nearest(pixels[foreground], COLORS), minlength=len(COLORS))
    color = list(COLORS)[int(votes.argmax())]
    blob = largest_component(foreground)
    ys, xs = np.nonzero(blob)
    # The bounding-box center, not the centroid: a triangle's centroid sits low.
    position = position_of((xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2, pixels.shape[1])
    return {"color": color, "shape": classify_shape(blob), "background": background, "position": position}


def judge(image: torch.Tensor, caption: str | dict) -> dict[str, bool]:
    """Per-attribute correctness of an image [3, H, W] in [0, 1] against a caption.

    Args:
        image: RGB in [0, 1].
        caption: a dataset-grammar caption or the dict `parse_caption` returns.

    Returns:
        ``{"color", "shape", "background", "all"}`` booleans (``all`` = the three together),
        plus ``"position"`` when the caption asks for one.
    """
    want = parse_caption(caption) if isinstance(caption, str) else caption
    got = analyze(image)
    verdict = {key: got[key] == want[key] for key in ("color", "shape", "background")}
    verdict["all"] = all(verdict.values())
    if want.get("position"):
        verdict["position"] = got["position"] == want["position"]
    return verdict


def evaluation_prompts(split: str, n: int, seed: int = 1234, position_prob: float = 0.5) -> list[str]:
    """`n` deterministic captions over `SEEN` or `HELD_OUT` combinations, all backgrounds and positions."""
    combos = {"seen": SEEN, "held_out": tuple(sorted(HELD_OUT))}.get(split)
    if combos is None:
        raise ValueError(f"split must be 'seen' or 'held_out', got {split!r}")
    rng = np.random.default_rng([seed, len(split)])
    prompts = []
    for i in range(n):
        color, shape = combos[i % len(combos)]
        background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
        position = POSITIONS[rng.integers(len(POSITIONS))] if rng.random() < position_prob else None
        prompts.append(make_caption(color, shape, background, position))
    return prompts


def score(images: torch.Tensor, prompts: list[str]) -> dict[str, float]:
    """Adherence rates over a batch: color, shape, background, all, and position (where asked)."""
    verdicts = [judge(image, prompt) for image, prompt in zip(images, prompts)]
    rates = {key: float(np.mean([v[key] for v in verdicts])) for key in ("color", "shape", "background", "all")}
    positioned = [v["position"] for v in verdicts if "position" in v]
    rates["position"] = float(np.mean(positioned)) if positioned else float("nan")
    rates["n"] = len(verdicts)
    return rates


def evaluate(bundle, settings: list[tuple[str, int]], samples: int, cfg: float, seed: int,
             chunk: int = 100) -> list[dict]:
    """Adherence per (method, steps) and split; one row per combination."""
    from .generate import generate_images

    rows = []
    for method, steps in settings:
        for split in ("seen", "held_out"):
            prompts = evaluation_prompts(split, samples)
            images = torch.cat([
                generate_images(bundle, prompts[i:i + chunk], steps=steps, method=method, cfg=cfg, seed=seed + i)
                for i in range(0, len(prompts), chunk)
            ])
            row = {"method": method, "steps": steps, "split": split, "cfg": cfg, **score(images, prompts)}
            logger.info(json.dumps(row))
            rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = ["| solver | steps | split | n | color | shape | background | all three | position |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['steps']} | {r['split']} | {r['n']} | {r['color']:.1%} | "
                     f"{r['shape']:.1%} | {r['background']:.1%} | {r['all']:.1%} | {r['position']:.1%} |")
    return "\n".join(lines)


def parse_setting(text: str) -> tuple[str, int]:
    """``"euler:20"`` -> ("euler", 20): a fixed-step solver and 1 to `MAX_STEPS` steps."""
    from ..samplers import METHODS

    method, _, steps = text.partition(":")
    if not steps.isdigit() or not 1 <= int(steps) <= MAX_STEPS:
        raise argparse.ArgumentTypeError(f"setting {text!r} must look like 'euler:20' (1 to {MAX_STEPS} steps)")
    if method not in METHODS:
        raise argparse.ArgumentTypeError(f"setting {text!r}: unknown solver {method!r}; choose one of {', '.join(sorted(METHODS))}")
    return method, int(steps)


def main(argv: list[str] | None = None) -> int:
    """CLI: returns 0, or 2 with a one-line error (arguments, --json path, checkpoint) before sampling."""
    from .checkpoint import load_checkpoint
    from .generate import DEFAULT_CHECKPOINT

    parser = CLIParser(prog="python -m comfyui_flowmatch.models.evaluate", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--settings", nargs="+", type=parse_setting,
                        default=[("euler", 20), ("midpoint", 10), ("euler", 200)])
    parser.add_argument("--samples", type=int_in(1, 100_000), default=200, help="samples per split")
    parser.add_argument("--cfg", type=finite_float(), default=4.0)
    parser.add_argument("--seed", type=int_in(0), default=0)
    parser.add_argument("--threads", type=int_in(1, 1024), default=None)
    parser.add_argument("--json", type=Path, default=None, help="write the rows to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    def run() -> None:
        if args.json:
            writable_file(args.json, (".json",))
        if args.threads:
            torch.set_num_threads(args.threads)
        rows = evaluate(load_checkpoint(args.checkpoint), args.settings, args.samples, args.cfg, args.seed)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(rows, indent=2))
        logger.info("\n%s", markdown_table(rows))

    return run_cli(parser.prog, run)


if __name__ == "__main__":
    sys.exit(main())
