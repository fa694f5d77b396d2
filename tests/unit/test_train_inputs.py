"""Training data and --resume: unreadable files are skipped by name, unusable states are explained."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from comfyui_flowmatch.models import train
from comfyui_flowmatch.models.data import load_folder
from comfyui_flowmatch.models.dit import DiTConfig
from comfyui_flowmatch.models.text import TextConfig, Tokenizer
from comfyui_flowmatch.models.train import ResumeError, TrainConfig, load_train_state, new_run, save_train_state

pytestmark = pytest.mark.unit


def write_png(path, color=(200, 30, 30), size=(20, 12)):
    Image.fromarray(np.full((size[1], size[0], 3), color, dtype=np.uint8)).save(path)


@pytest.fixture
def messy_folder(tmp_path):
    """Two good pairs and one of every kind of bad file."""
    write_png(tmp_path / "good1.png")
    (tmp_path / "good1.txt").write_text("a red square")
    write_png(tmp_path / "good2.jpg", color=(10, 10, 200))
    (tmp_path / "good2.txt").write_text("a blue square\n")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (tmp_path / "corrupt.txt").write_text("never used")
    write_png(tmp_path / "truncated.png", size=(64, 64))
    data = (tmp_path / "truncated.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "truncated.txt").write_text("cut short")
    write_png(tmp_path / "latin1.png")
    (tmp_path / "latin1.txt").write_bytes("un carr\xe9 rouge".encode("latin-1"))
    write_png(tmp_path / "empty.png")
    (tmp_path / "empty.txt").write_text("  \n")
    write_png(tmp_path / "uncaptioned.png")
    (tmp_path / "notes.md").write_text("not an image")
    return tmp_path


def test_unreadable_images_and_captions_are_skipped_with_a_warning_naming_each(messy_folder, caplog):
    with caplog.at_level(logging.WARNING):
        images, captions = load_folder(messy_folder, 8)
    assert captions == ["a red square", "a blue square"]
    assert images.shape == (2, 3, 8, 8)
    assert images[0, 0].mean() > 0.7 and images[1, 2].mean() > 0.7  # red first, then blue: the right pairs
    warned = " ".join(caplog.messages)
    for name, reason in (("corrupt.png", "not a readable image"), ("truncated.png", "not a readable image"),
                         ("latin1.txt", "not UTF-8"), ("empty.txt", "caption is empty"),
                         ("uncaptioned.png", "no caption file")):
        assert name in warned and reason in warned, (name, warned)


def test_a_folder_with_nothing_usable_stops_the_trainer_with_one_line(messy_folder, capsys, tmp_path_factory):
    for good in ("good1.png", "good2.jpg"):
        (messy_folder / good).unlink()
    out = tmp_path_factory.mktemp("out")
    code = train.main(["--data", str(messy_folder), "--output", str(out / "m.safetensors"), "--run-dir", str(out / "run"),
                       "--steps", "1", "--dit-image-size", "16"])
    err = capsys.readouterr().err
    assert code == 2
    assert "no captioned images could be used" in err and "5 skipped" in err and "Traceback" not in err


DIT = DiTConfig(image_size=16, patch=4, width=32, depth=1, heads=2, text_dim=16, conv_channels=8)


def tiny_run(dit: DiTConfig = DIT, captions=("a red circle",)):
    tokenizer = Tokenizer.from_captions(list(captions))
    text = TextConfig(vocab_size=len(tokenizer.vocab), dim=16, depth=1, heads=2)
    return new_run(dit, text, tokenizer, TrainConfig(steps=2, batch_size=2), torch.device("cpu"))


@pytest.fixture
def saved_state(tmp_path):
    path = tmp_path / "train_state.safetensors"
    save_train_state(tiny_run(), path, {"train_config": "{}"})
    return path


def test_resume_without_a_state_says_where_it_looked(tmp_path):
    with pytest.raises(ResumeError, match=r"no train state at .*train_state.safetensors; start without --resume"):
        load_train_state(tiny_run(), tmp_path / "train_state.safetensors")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_resume_from_a_damaged_state_says_it_is_damaged(saved_state, damage):
    data = saved_state.read_bytes()
    saved_state.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x07" * 200, "empty": b""}[damage])
    with pytest.raises(ResumeError, match="is not a readable train state .* truncated .* or corrupted: delete it"):
        load_train_state(tiny_run(), saved_state)


def test_resume_with_another_architecture_names_a_tensor_and_the_options(saved_state):
    wider = DiTConfig(**{**DIT.__dict__, "width": 64, "heads": 4})
    with pytest.raises(ResumeError, match=r"saved by a different model \(shapes differ: model.dit.* \[.*\] \(this run: \[.*\]\).*--dit-\*/--text-\*"):
        load_train_state(tiny_run(wider), saved_state)


def test_resume_with_another_vocabulary_is_a_different_model(saved_state):
    with pytest.raises(ResumeError, match="saved by a different model .*same --data"):
        load_train_state(tiny_run(captions=("a red circle", "many more new words here")), saved_state)


def test_resume_from_a_file_that_is_no_train_state(tmp_path):
    path = tmp_path / "train_state.safetensors"
    save_file({"weight": torch.zeros(2)}, str(path))
    with pytest.raises(ResumeError, match="no valid step/elapsed_s/train_config metadata .* not written by models.train"):
        load_train_state(tiny_run(), path)


def test_resume_errors_reach_the_cli_as_one_line(saved_state, capsys):
    saved_state.write_bytes(b"\x07" * 200)
    code = train.main(["--resume", "--run-dir", str(saved_state.parent), "--output", str(saved_state.parent / "m.safetensors"),
                       "--steps", "1", "--batch-size", "2", "--dit-image-size", "16", "--dit-width", "32", "--dit-depth", "1",
                       "--dit-heads", "2", "--dit-conv-channels", "8", "--text-dim", "16", "--text-depth", "1",
                       "--text-heads", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "not a readable train state" in err, err
    assert saved_state.read_bytes() == b"\x07" * 200  # the damaged state is left for the user to inspect


def test_the_memory_check_counts_what_the_real_networks_allocate(monkeypatch):
    """The meta-device count behind the trainer's memory refusal equals the built networks' numel."""
    run = tiny_run()
    real = sum(p.numel() for module in (run.dit, run.text_encoder) for p in module.parameters())
    fits = real * train.BYTES_PER_TRAINED_PARAMETER + 4 * 4 * 2 * DIT.channels * DIT.image_size ** 2
    monkeypatch.setattr(train, "device_memory_bytes", lambda device: fits - 1)
    with pytest.raises(ValueError, match=f"training {real / 1e6:,.0f}M parameters at batch 2"):
        train.check_training_memory(DIT, run.text_encoder.config, 2, torch.device("cpu"))
    monkeypatch.setattr(train, "device_memory_bytes", lambda device: fits)
    train.check_training_memory(DIT, run.text_encoder.config, 2, torch.device("cpu"))
