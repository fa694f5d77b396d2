"""The registry icon (docs/icon.png) from `make demo` output: four of the bundled model's
32 px images in a 2x2 grid, upscaled with nearest neighbour to 256 x 256.

    python scripts/make_icon.py [output/demo] [docs/icon.png]
"""

import sys
from pathlib import Path

from PIL import Image

TILE = 128


def make_icon(demo_dir: Path, path: Path) -> None:
    images = sorted(demo_dir.glob("demo*.png"))[:4]
    if len(images) < 4:
        raise SystemExit(f"need four demo images in {demo_dir}: run `make demo` first")
    icon = Image.new("RGB", (2 * TILE, 2 * TILE))
    for index, image_path in enumerate(images):
        with Image.open(image_path) as image:
            tile = image.convert("RGB").resize((TILE, TILE), Image.Resampling.NEAREST)
        icon.paste(tile, ((index % 2) * TILE, (index // 2) * TILE))
    icon.save(path, optimize=True)


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    make_icon(Path(sys.argv[1]) if len(sys.argv) > 1 else root / "output" / "demo",
              Path(sys.argv[2]) if len(sys.argv) > 2 else root / "docs" / "icon.png")
