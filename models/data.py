"""Training data: procedural captioned shapes, generated on the fly, and a folder dataset.

Images are RGB float tensors in [0, 1], NCHW. Captions follow
``a {color} {shape} on a {background} background`` with an optional
`` in the {position}`` clause. A shape has a "radius" r: a circle of radius r,
a square of side 2r + 1 and an upright triangle with apex (cx, cy - r) and base
corners (cx -/+ r, cy + r) all fill the same 2r x 2r box, so only the shape
(not the size) tells them apart.

Three color/shape combinations are held out of training (`HELD_OUT`) to test
that text conditioning composes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

logger = logging.getLogger(__name__)

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 180, 60),
    "blue": (40, 70, 220),
    "yellow": (240, 220, 40),
    "purple": (140, 50, 200),
    "orange": (250, 140, 20),
    "cyan": (40, 210, 220),
    "white": (245, 245, 245),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"black": (10, 10, 10), "gray": (128, 128, 128)}
POSITIONS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right", "center")
HELD_OUT: frozenset[tuple[str, str]] = frozenset({("purple", "triangle"), ("orange", "circle"), ("cyan", "square")})
SEEN: tuple[tuple[str, str], ...] = tuple(
    (c, s) for c in COLORS for s in SHAPES if (c, s) not in HELD_OUT
)
RADIUS_RANGE: tuple[int, int] = (5, 11)
# Shapes placed in a corner stay smaller so they fit in their quadrant.
CORNER_RADIUS_MAX = 7
# Centers (x, y) of the five position regions as fractions of the image side.
POSITION_CENTERS: dict[str, tuple[float, float]] = {
    "top left": (0.28, 0.28),
    "top right": (0.72, 0.28),
    "bottom left": (0.28, 0.72),
    "bottom right": (0.72, 0.72),
    "center": (0.5, 0.5),
}
POSITION_JITTER = 0.05


@dataclass(frozen=True)
class ShapeSpec:
    """One procedural image: what to draw and where (pixel units at `size`)."""

    color: str
    shape: str
    background: str
    position: str | None
    cx: float
    cy: float
    radius: float

    def __post_init__(self) -> None:
        if self.color not in COLORS:
            raise ValueError(f"unknown color {self.color!r}; expected one of {sorted(COLORS)}")
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; expected one of {SHAPES}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r}; expected one of {sorted(BACKGROUNDS)}")
        if self.position is not None and self.position not in POSITIONS:
            raise ValueError(f"unknown position {self.position!r}; expected one of {POSITIONS}")
        if self.radius <= 0:
            raise ValueError(f"radius must be > 0, got {self.radius}")

    @property
    def caption(self) -> str:
        return make_caption(self.color, self.shape, self.background, self.position)


def make_caption(color: str, shape: str, background: str, position: str | None = None) -> str:
    """The canonical caption, e.g. ``a red circle on a black background in the center``."""
    caption = f"a {color} {shape} on a {background} background"
    return caption if position is None else f"{caption} in the {position}"


def all_captions() -> list[str]:
    """Every caption the procedural dataset can produce, held-out combinations included."""
    return [
        make_caption(c, s, b, p)
        for c in COLORS for s in SHAPES for b in BACKGROUNDS for p in (None, *POSITIONS)
    ]


def sample_spec(
    rng: np.random.Generator,
    size: int = 32,
    combos: tuple[tuple[str, str], ...] = SEEN,
    position_prob: float = 0.5,
) -> ShapeSpec:
    """Draw one random `ShapeSpec` whose (color, shape) is in `combos`."""
    color, shape = combos[rng.integers(len(combos))]
    background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    scale = size / 32
    position = POSITIONS[rng.integers(len(POSITIONS))] if rng.random() < position_prob else None
    r_max = CORNER_RADIUS_MAX if position not in (None, "center") else RADIUS_RANGE[1]
    radius = float(rng.integers(RADIUS_RANGE[0], r_max + 1)) * scale
    if position is None:
        cx, cy = rng.uniform(radius, size - 1 - radius, size=2)
    else:
        fx, fy = POSITION_CENTERS[position]
        jx, jy = rng.uniform(-POSITION_JITTER, POSITION_JITTER, size=2)
        cx, cy = (fx + jx) * size, (fy + jy) * size
    return ShapeSpec(color, shape, background, position, float(cx), float(cy), radius)


def shape_mask(shape: str, cx: float, cy: float, radius: float, height: int, width: int) -> torch.Tensor:
    """Boolean [H, W] mask of a filled shape; pixel (i, j) is sampled at (x=j, y=i)."""
    ys = torch.arange(height, dtype=torch.float32)[:, None]
    xs = torch.arange(width, dtype=torch.float32)[None, :]
    dx, dy = xs - cx, ys - cy
    if shape == "circle":
        return dx * dx + dy * dy <= radius * radius
    if shape == "square":
        return (dx.abs() <= radius) & (dy.abs() <= radius)
    if shape == "triangle":
        depth = (dy + radius) / (2 * radius)  # 0 at the apex, 1 at the base
        return (depth >= 0) & (depth <= 1) & (dx.abs() <= depth * radius)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def render(spec: ShapeSpec, size: int = 32) -> torch.Tensor:
    """Render `spec` as a [3, size, size] float image in [0, 1]."""
    bg = torch.tensor(BACKGROUNDS[spec.background], dtype=torch.float32) / 255
    fg = torch.tensor(COLORS[spec.color], dtype=torch.float32) / 255
    mask = shape_mask(spec.shape, spec.cx, spec.cy, spec.radius, size, size)
    return torch.where(mask[None], fg[:, None, None], bg[:, None, None])


@dataclass(frozen=True)
class ShapesDataset:
    """Procedural captioned shapes; `batch(step)` is a pure function of (seed, step).

    Args:
        seed: base seed; the same (seed, step) always gives the same batch.
        size: image side in pixels.
        position_prob: probability that a caption carries a position clause.
        combos: allowed (color, shape) pairs; defaults to everything but `HELD_OUT`.
    """

    seed: int = 0
    size: int = 32
    position_prob: float = 0.5
    combos: tuple[tuple[str, str], ...] = SEEN

    def __post_init__(self) -> None:
        if self.size < 16:
            raise ValueError(f"size must be >= 16, got {self.size}")
        if not 0.0 <= self.position_prob <= 1.0:
            raise ValueError(f"position_prob must be in [0, 1], got {self.position_prob}")
        if not self.combos:
            raise ValueError("combos must not be empty")

    def specs(self, step: int, batch_size: int) -> list[ShapeSpec]:
        rng = np.random.default_rng([self.seed, step])
        return [sample_spec(rng, self.size, self.combos, self.position_prob) for _ in range(batch_size)]

    def batch(self, step: int, batch_size: int) -> tuple[torch.Tensor, list[str]]:
        """Images [B, 3, size, size] in [0, 1] and their captions."""
        specs = self.specs(step, batch_size)
        return torch.stack([render(s, self.size) for s in specs]), [s.caption for s in specs]

    def vocabulary_captions(self) -> list[str]:
        """Captions that define the tokenizer vocabulary (all combinations: words, not pairs)."""
        return all_captions()


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass(frozen=True)
class FolderDataset:
    """A user's folder of images, each with a same-name ``.txt`` caption.

    Images are center-cropped to a square, resized to `size` and kept in memory.
    `batch(step)` samples with replacement, deterministic in (seed, step).
    """

    folder: str
    seed: int = 0
    size: int = 32

    def __post_init__(self) -> None:
        if not Path(self.folder).is_dir():
            raise ValueError(f"dataset folder {self.folder!r} does not exist")
        if self.size < 8:
            raise ValueError(f"size must be >= 8, got {self.size}")
        images, captions = load_folder(Path(self.folder), self.size)
        object.__setattr__(self, "_images", images)
        object.__setattr__(self, "_captions", captions)

    def batch(self, step: int, batch_size: int) -> tuple[torch.Tensor, list[str]]:
        rng = np.random.default_rng([self.seed, step])
        idx = rng.integers(len(self._captions), size=batch_size)
        return self._images[torch.as_tensor(idx)], [self._captions[i] for i in idx]

    def vocabulary_captions(self) -> list[str]:
        return list(self._captions)


def load_folder(folder: Path, size: int) -> tuple[torch.Tensor, list[str]]:
    """Load every image with a ``.txt`` sibling: ([N, 3, size, size] in [0, 1], captions).

    An image or caption that cannot be read (corrupt or truncated file, not UTF-8, empty
    caption, no permission) is skipped with a warning naming the file.

    Raises:
        ValueError: nothing usable is left; the message counts what was skipped.
    """
    images, captions, skipped = [], [], 0
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        caption_path = path.with_suffix(".txt")
        if not caption_path.is_file():
            logger.warning("skipping %s: no caption file %s", path.name, caption_path.name)
            skipped += 1
            continue
        try:
            caption = read_caption(caption_path)
            image = read_image(path, size)
        except ValueError as error:
            logger.warning("skipping %s", error)
            skipped += 1
            continue
        images.append(image)
        captions.append(caption)
    if not images:
        raise ValueError(f"no captioned images could be used in {folder} ({skipped} skipped, see the warnings above); "
                         f"the folder needs image files ({', '.join(sorted(IMAGE_SUFFIXES))}) with same-name .txt captions")
    return torch.stack(images), captions


def read_caption(path: Path) -> str:
    """The stripped UTF-8 text of a caption file.

    Raises:
        ValueError: unreadable, not UTF-8, or empty; names the file.
    """
    try:
        caption = path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: caption is not UTF-8 text ({error.reason} at byte {error.start})") from error
    except OSError as error:
        raise ValueError(f"{path}: caption cannot be read ({error.strerror or error})") from error
    if not caption:
        raise ValueError(f"{path}: caption is empty")
    return caption


def read_image(path: Path, size: int) -> torch.Tensor:
    """An image file center-cropped to a square and resized: [3, size, size] in [0, 1].

    Raises:
        ValueError: not a readable image (corrupt, truncated, too many pixels, no permission); names the file.
    """
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            side = min(im.size)
            left, top = (im.width - side) // 2, (im.height - side) // 2
            im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
            return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"{path}: not a readable image ({error})") from error


def position_of(cx: float, cy: float, size: int) -> str:
    """The position region ('center' or a quadrant) that contains point (cx, cy)."""
    half = size / 2
    if max(abs(cx - half), abs(cy - half)) <= 0.14 * size:
        return "center"
    return f"{'top' if cy < half else 'bottom'} {'left' if cx < half else 'right'}"
