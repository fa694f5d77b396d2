"""The shipped checkpoint: present, small, valid metadata, and it draws what it is told."""

from pathlib import Path

import pytest

from comfyui_flowmatch.models.checkpoint import load_checkpoint, read_metadata
from comfyui_flowmatch.models.evaluate import judge
from comfyui_flowmatch.models.generate import DEFAULT_CHECKPOINT, generate_images

pytestmark = pytest.mark.unit


def test_bundled_checkpoint_is_small_and_described():
    path = Path(DEFAULT_CHECKPOINT)
    assert path.name == "flowmatch_shapes.safetensors" and path.parent.name == "weights"
    assert path.stat().st_size <= 25 * 2**20
    meta = read_metadata(path)
    assert meta["latent"]["space"] == "pixel" and meta["latent"]["channels"] == 3
    assert meta["latent"]["height"] == meta["latent"]["width"] == 32
    assert {"steps", "data", "final_loss"} <= set(meta["training"])


def test_bundled_model_follows_a_seen_prompt():
    bundle = load_checkpoint(DEFAULT_CHECKPOINT)
    prompt = "a red circle on a black background"
    images = generate_images(bundle, [prompt] * 8, steps=20, cfg=4.0, seed=0)
    assert sum(judge(image, prompt)["all"] for image in images) >= 6
