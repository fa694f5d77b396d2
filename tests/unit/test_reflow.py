"""Reflow: pairs are the teacher's own samples, shards resume, the student starts as the teacher."""

import json

import pytest
import torch
from safetensors import safe_open

from comfyui_flowmatch.models.checkpoint import load_checkpoint, save_checkpoint
from comfyui_flowmatch.models.data import ShapesDataset
from comfyui_flowmatch.models.dit import DiTConfig, FlowDiT
from comfyui_flowmatch.models.distributed import Distributed
from comfyui_flowmatch.models.generate import generate_images
from comfyui_flowmatch.models.reflow import PAIR_SEED_OFFSET, generate_pairs, load_pairs, main, shard_path
from comfyui_flowmatch.models.text import TextConfig, TextEncoder, Tokenizer

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    torch.manual_seed(0)
    tokenizer = Tokenizer.from_captions(ShapesDataset(size=16).vocabulary_captions())
    dit = FlowDiT(DiTConfig(image_size=16, width=32, depth=1, heads=2, text_dim=16, conv_channels=8,
                            prediction="data"))
    text = TextEncoder(TextConfig(vocab_size=len(tokenizer.vocab), dim=16, depth=1, heads=2))
    for p in [*dit.parameters(), *text.parameters()]:
        torch.nn.init.normal_(p, std=0.05)  # the zero-initialised gates would make every sample the same
    path = tmp_path_factory.mktemp("teacher") / "teacher.safetensors"
    save_checkpoint(path, dit, text, tokenizer, {"steps": 0}, dtype=torch.float32)
    return path


def test_pairs_are_the_teachers_samples_and_shards_resume(teacher, tmp_path):
    bundle = load_checkpoint(teacher)
    options = dict(shard_size=4, method="midpoint", steps=3, cfg=2.5, seed=0, time_budget_s=0.0, where=Distributed())
    generate_pairs(bundle, tmp_path, pairs=8, **options)
    first = shard_path(tmp_path, 1).stat().st_mtime_ns
    generate_pairs(bundle, tmp_path, pairs=12, **options)  # keeps shards 0-1, adds shard 2
    assert shard_path(tmp_path, 1).stat().st_mtime_ns == first and shard_path(tmp_path, 2).exists()
    noise, image, captions = load_pairs(tmp_path)
    assert noise.shape == image.shape == (12, 3, 16, 16) and len(captions) == 12
    with safe_open(str(shard_path(tmp_path, 2)), framework="pt") as f:
        assert json.loads(f.metadata()["captions"]) == captions[8:]
    # pair j: noise seeded PAIR_SEED_OFFSET + j, integrated like generate_images at the same cfg
    reference = generate_images(bundle, captions[4:8], steps=3, method="midpoint", cfg=2.5, seed=PAIR_SEED_OFFSET + 4)
    torch.testing.assert_close(((image[4:8] + 1) / 2).clamp(0, 1), reference, rtol=1e-5, atol=1e-5)


def test_shifted_teacher_grid_draws_what_generate_draws_at_that_shift(teacher, tmp_path):
    bundle = load_checkpoint(teacher)
    generate_pairs(bundle, tmp_path, pairs=4, shard_size=4, method="flow_reuse", steps=3, cfg=2.5, seed=0,
                   time_budget_s=0.0, where=Distributed(), shift=3.0)
    noise, image, captions = load_pairs(tmp_path)
    reference = generate_images(bundle, captions, steps=3, method="flow_reuse", cfg=2.5, seed=PAIR_SEED_OFFSET,
                                shift=3.0)
    torch.testing.assert_close(((image + 1) / 2).clamp(0, 1), reference, rtol=1e-5, atol=1e-5)
    with safe_open(str(shard_path(tmp_path, 0)), framework="pt") as f:
        assert f.metadata()["shift"] == "3.0" and f.metadata()["method"] == "flow_reuse"


@pytest.mark.parametrize("shift", ["0", "-1", "nan", "inf"])
def test_cli_refuses_a_bad_teacher_shift_before_loading_the_teacher(tmp_path, capsys, shift):
    code = main(["--teacher", str(tmp_path / "missing.safetensors"), "--output", str(tmp_path / "s.safetensors"),
                 "--run-dir", str(tmp_path / "run"), "--teacher-shift", shift, "--device", "cpu"])
    assert code == 2
    assert "--teacher-shift must be a finite number > 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_cli_trains_a_student_from_the_teacher(teacher, tmp_path):
    out = tmp_path / "student.safetensors"
    main(["--teacher", str(teacher), "--output", str(out), "--run-dir", str(tmp_path / "run"), "--pairs", "8",
          "--shard-size", "4", "--teacher-steps", "2", "--steps", "3", "--batch-size", "4", "--warmup", "1",
          "--save-every", "3", "--sample-every", "1000", "--threads", "1", "--device", "cpu"])
    student, original = load_checkpoint(out), load_checkpoint(teacher)
    facts = student.metadata["training"]
    assert facts["reflow"]["pairs"] == 8 and facts["reflow"]["teacher_cfg"] == 4.0
    assert facts["sampling"]["cfg"] == 1.0 and facts["steps"] == 3
    assert student.metadata["config"] == original.metadata["config"]
    # 3 small steps from the teacher: close to it, but trained
    deltas = [(a - b).abs().max().item() for a, b in zip(student.dit.state_dict().values(),
                                                         original.dit.state_dict().values())]
    assert 0 < max(deltas) < 0.05


def test_pair_filter_keeps_images_that_show_their_caption():
    from comfyui_flowmatch.models.reflow import judged_valid

    images, captions = ShapesDataset(seed=3, size=32).batch(0, 6)
    model_space = images * 2 - 1
    noise = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    keep = judged_valid(torch.cat([model_space, noise]), captions + captions)
    assert keep.tolist() == [True] * 6 + [False] * 6
