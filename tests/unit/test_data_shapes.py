"""Procedural data: determinism, captions, held-out combinations, folder datasets."""

import numpy as np
import pytest
import torch
from PIL import Image

from comfyui_flowmatch.models.data import (
    BACKGROUNDS, COLORS, HELD_OUT, SEEN, FolderDataset, ShapeSpec, ShapesDataset, render,
)
from comfyui_flowmatch.models.evaluate import parse_caption

pytestmark = pytest.mark.unit


def test_same_seed_and_step_give_the_same_batch():
    a, b = ShapesDataset(seed=3).batch(7, 8), ShapesDataset(seed=3).batch(7, 8)
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
    assert ShapesDataset(seed=3).batch(8, 8)[1] != a[1]


def test_images_are_rgb_in_unit_range_with_palette_colors_only():
    images, captions = ShapesDataset(seed=0).batch(0, 16)
    assert images.shape == (16, 3, 32, 32) and images.min() >= 0 and images.max() <= 1
    palette = {tuple(c) for c in [*COLORS.values(), *BACKGROUNDS.values()]}
    pixels = {tuple(p) for p in (images.permute(0, 2, 3, 1).reshape(-1, 3) * 255).round().int().tolist()}
    assert pixels <= palette


def test_held_out_combinations_never_appear_in_training_batches():
    seen = set()
    ds = ShapesDataset(seed=0)
    for step in range(200):
        for spec in ds.specs(step, 64):
            seen.add((spec.color, spec.shape))
    assert not seen & HELD_OUT
    assert seen == set(SEEN)
    assert len(SEEN) == 21 and len(HELD_OUT) == 3


def test_captions_follow_the_grammar_and_positions_appear():
    captions = ShapesDataset(seed=1).batch(0, 200)[1]
    parsed = [parse_caption(c) for c in captions]
    assert all(c.startswith("a ") for c in captions)
    with_position = sum(p["position"] is not None for p in parsed)
    assert 60 < with_position < 140


def test_shapes_have_the_same_box_and_different_fill():
    fills = {}
    for shape in ("circle", "square", "triangle"):
        image = render(ShapeSpec("red", shape, "black", None, 16.0, 16.0, 10.0))
        mask = (image - image[:, :1, :1]).abs().sum(0) > 0
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert (xs.max() - xs.min(), ys.max() - ys.min()) == (20, 20)
        fills[shape] = mask.float().sum().item() / 21 ** 2
    assert fills["triangle"] < 0.6 < fills["circle"] < 0.85 < fills["square"]


@pytest.mark.parametrize("field, value", [("color", "pink"), ("shape", "star"), ("background", "blue"),
                                          ("position", "middle")])
def test_spec_validation_names_the_value(field, value):
    kwargs = dict(color="red", shape="circle", background="black", position=None, cx=5.0, cy=5.0, radius=3.0)
    with pytest.raises(ValueError, match=repr(value)):
        ShapeSpec(**{**kwargs, field: value})


def test_folder_dataset_reads_images_with_captions(tmp_path, caplog):
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(tmp_path / f"img{i}.png")
        (tmp_path / f"img{i}.txt").write_text(f"picture number {i}\n")
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "orphan.png")
    ds = FolderDataset(str(tmp_path), seed=0, size=16)
    images, captions = ds.batch(0, 5)
    assert images.shape == (5, 3, 16, 16) and all(c.startswith("picture number") for c in captions)
    assert "orphan.png" in caplog.text
    assert ds.batch(0, 5)[1] == captions


def test_folder_without_captions_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no captioned images"):
        FolderDataset(str(tmp_path))
    with pytest.raises(ValueError, match="does not exist"):
        FolderDataset(str(tmp_path / "absent"))
