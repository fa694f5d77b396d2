"""generate_images and the generate CLI on a tiny random checkpoint."""

import pytest
import torch
from PIL import Image

from comfyui_flowmatch.__main__ import main as pack_main
from comfyui_flowmatch.models.checkpoint import load_checkpoint, save_checkpoint
from comfyui_flowmatch.models.dit import DiTConfig, FlowDiT
from comfyui_flowmatch.models.generate import generate_images, initial_noise
from comfyui_flowmatch.models.text import TextConfig, TextEncoder, Tokenizer

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    torch.manual_seed(0)
    tokenizer = Tokenizer.from_captions(["a red circle on a black background"], max_length=10)
    dit = FlowDiT(DiTConfig(image_size=16, patch=4, width=32, depth=1, heads=2, text_dim=16, conv_channels=8))
    text = TextEncoder(TextConfig(vocab_size=len(tokenizer.vocab), dim=16, depth=1, heads=2, max_length=10))
    with torch.no_grad():
        for p in [*dit.parameters(), *text.parameters()]:
            p.copy_(torch.randn_like(p) * 0.1)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, dit, text, tokenizer, training={}, dtype=torch.float32)
    return path


def test_images_are_in_unit_range_and_deterministic(tiny_path):
    bundle = load_checkpoint(tiny_path)
    prompts = ["a red circle on a black background", ""]
    a = generate_images(bundle, prompts, steps=4, cfg=3.0, seed=5)
    assert a.shape == (2, 3, 16, 16) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, generate_images(bundle, prompts, steps=4, cfg=3.0, seed=5))
    assert not torch.equal(a, generate_images(bundle, prompts, steps=4, cfg=3.0, seed=6))


def test_an_image_does_not_depend_on_its_batch(tiny_path):
    bundle = load_checkpoint(tiny_path)
    batch = generate_images(bundle, ["a red circle"] * 3, steps=3, method="midpoint", seed=10)
    alone = generate_images(bundle, ["a red circle"], steps=3, method="midpoint", seed=12)
    assert torch.allclose(batch[2:], alone, atol=1e-5)


def test_cfg_one_is_the_conditional_model(tiny_path):
    bundle = load_checkpoint(tiny_path)
    guided = generate_images(bundle, ["a red circle"], steps=2, cfg=1.0, seed=0)
    x0 = initial_noise(1, 3, 16, 16, seed=0)
    ctx, pooled = bundle.text_encoder(bundle.tokenizer(["a red circle"]))
    with torch.no_grad():
        x = x0 + 0.5 * bundle.dit(x0, torch.zeros(1), ctx, pooled)
        x = x + 0.5 * bundle.dit(x, torch.full((1,), 0.5), ctx, pooled)
    assert torch.allclose(guided, ((x + 1) / 2).clamp(0, 1), atol=1e-5)


def test_other_sizes(tiny_path):
    assert generate_images(load_checkpoint(tiny_path), ["a red circle"], steps=2, size=24).shape == (1, 3, 24, 24)


def test_bad_arguments(tiny_path):
    bundle = load_checkpoint(tiny_path)
    with pytest.raises(ValueError, match="steps must be >= 1, got 0"):
        generate_images(bundle, ["x"], steps=0)
    with pytest.raises(ValueError, match="prompts must not be empty"):
        generate_images(bundle, [])


def test_generate_cli_through_the_pack_entry_point(tiny_path, tmp_path):
    out = tmp_path / "out.png"
    code = pack_main(["generate", "a red circle on a black background", "--checkpoint", str(tiny_path),
                      "--steps", "2", "--solver", "euler", "--cfg", "4", "--seed", "0", "--batch", "4",
                      "-o", str(out)])
    assert code == 0
    with Image.open(out) as image:
        assert image.size == (2 * 16 * 4, 2 * 16 * 4)
