"""A contact sheet: the batch's images in a captioned grid, one PNG (Pillow)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

CAPTION_HEIGHT = 28
BACKGROUND = (24, 24, 24)
TEXT = (230, 230, 230)


def contact_sheet(images: list[Path], captions: list[str], path: Path, columns: int = 4, cell: int = 192) -> Path:
    """Write the grid of `images` (each fitted into a `cell`-pixel square, caption below) to `path`.

    Raises:
        ValueError: no images, or captions and images of different lengths.
    """
    if not images or len(images) != len(captions):
        raise ValueError(f"need one caption per image, got {len(images)} images and {len(captions)} captions")
    rows = -(-len(images) // columns)
    sheet = Image.new("RGB", (columns * cell, rows * (cell + CAPTION_HEIGHT)), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for index, (image_path, caption) in enumerate(zip(images, captions)):
        x, y = (index % columns) * cell, (index // columns) * (cell + CAPTION_HEIGHT)
        with Image.open(image_path) as image:
            thumb = ImageOps.contain(image.convert("RGB"), (cell - 8, cell - 8))
        sheet.paste(thumb, (x + (cell - thumb.width) // 2, y + (cell - thumb.height) // 2))
        draw.text((x + 4, y + cell + 4), _fit(draw, caption, cell - 8), fill=TEXT)
    sheet.save(path)
    return path


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int) -> str:
    while text and draw.textlength(text) > width:
        text = text[:-2] + "…" if len(text) > 1 else ""
    return text
