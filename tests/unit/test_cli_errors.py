"""The pack's command lines refuse bad arguments before any work: one line on stderr, exit code 2.

Each case also checks that nothing was written (no output file, no half-written one) and
that the check came first (a bad argument is reported even with a missing checkpoint).
"""

from __future__ import annotations

import os

import pytest
import torch
from PIL import Image

from comfyui_flowmatch.__main__ import main as pack_main
from comfyui_flowmatch.models import benchmark, evaluate, train
from comfyui_flowmatch.models.checkpoint import save_checkpoint
from comfyui_flowmatch.models.dit import DiTConfig, FlowDiT
from comfyui_flowmatch.models.text import TextConfig, TextEncoder, Tokenizer

pytestmark = pytest.mark.unit

MISSING_CHECKPOINT = "/nonexistent/model.safetensors"


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    tokenizer = Tokenizer.from_captions(["a red circle on a black background"], max_length=10)
    dit = FlowDiT(DiTConfig(image_size=16, patch=4, width=32, depth=1, heads=2, text_dim=16, conv_channels=8))
    text = TextEncoder(TextConfig(vocab_size=len(tokenizer.vocab), dim=16, depth=1, heads=2, max_length=10))
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, dit, text, tokenizer, training={}, dtype=torch.float32)
    return path


def run_cli(main, argv, capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err.strip()
    return code, err


def assert_one_line_error(code: int, err: str, *expected: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for text in expected:
        assert text in err, err


@pytest.mark.parametrize("args, expected", [
    (["--scale", "0"], "--scale: 0 is outside [1, 64]"),
    (["--steps", "0"], "--steps: 0 is outside [1, 10000]"),
    (["--steps", "1000000000"], "outside [1, 10000]"),
    (["--steps", "ten"], "'ten' is not a whole number"),
    (["--solver", "eulerr"], "unknown solver 'eulerr'; choose one of dopri5, euler"),
    (["--cfg", "nan"], "'nan' is not a finite number"),
    (["--cfg", "inf"], "'inf' is not a finite number"),
    (["--batch", "0"], "--batch: 0 is outside [1, 256]"),
    (["--batch", "100000"], "outside [1, 256]"),
    (["--seed", "-1"], "--seed: -1 is outside"),
    (["--size", "0"], "--size: 0 is outside"),
])
def test_generate_refuses_bad_numbers_before_loading_anything(args, expected, capsys, tmp_path):
    out = tmp_path / "out.png"
    code, err = run_cli(pack_main, ["generate", "a red circle", "--checkpoint", MISSING_CHECKPOINT, "-o", str(out), *args], capsys)
    assert_one_line_error(code, err, expected)
    assert not out.exists()


@pytest.mark.parametrize("output, expected", [
    ("out", "no suffix; use one of .png, .jpg"),
    ("out.txt", "suffix '.txt'; use one of .png"),
    ("a_file/out.png", "a_file is a file, so the folder"),
    (".", "is a folder; give a file name"),
])
def test_generate_refuses_an_unwritable_output_before_loading_anything(output, expected, capsys, tmp_path):
    (tmp_path / "a_file").write_text("x")
    target = tmp_path / output if output != "." else tmp_path / "folder.png"
    if output == ".":
        target.mkdir()
    code, err = run_cli(pack_main, ["generate", "x", "--checkpoint", MISSING_CHECKPOINT, "-o", str(target)], capsys)
    assert_one_line_error(code, err, expected)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_generate_refuses_a_read_only_folder(capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, err = run_cli(pack_main, ["generate", "x", "-o", str(locked / "sub" / "out.png")], capsys)
    assert_one_line_error(code, err, "no permission to write in")


def test_generate_checkpoint_errors_are_one_line(capsys, tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    for checkpoint, expected in ((MISSING_CHECKPOINT, "no such checkpoint file"), (garbage, str(garbage))):
        code, err = run_cli(pack_main, ["generate", "x", "--checkpoint", str(checkpoint), "-o", str(tmp_path / "o.png")], capsys)
        assert_one_line_error(code, err, expected)
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("args, expected", [
    (["--size", "18"], "--size 18 is not a multiple of the model's patch size 4"),
    (["--size", "128"], "--size 128 is above 4x the model's native 16 px (at most 64)"),
    (["--batch", "256", "--scale", "64"], "the saved grid would be 16384x16384 pixels"),
    (["--batch", "256", "--size", "64"], "--batch 256 at 64 px is 131072 image tokens per network call (CFG doubles it), above the limit 65536"),
])
def test_generate_refuses_sizes_the_model_cannot_take_before_sampling(args, expected, capsys, tmp_path, tiny_checkpoint):
    out = tmp_path / "out.png"
    code, err = run_cli(pack_main, ["generate", "x", "--checkpoint", str(tiny_checkpoint), "-o", str(out), *args], capsys)
    assert_one_line_error(code, err, expected)
    assert not out.exists()


def test_generate_creates_a_missing_output_folder_and_leaves_no_part_file(capsys, tmp_path, tiny_checkpoint):
    out = tmp_path / "new" / "deeper" / "grid.jpg"
    code, err = run_cli(pack_main, ["generate", "x", "--checkpoint", str(tiny_checkpoint), "--steps", "1",
                                    "--scale", "1", "-o", str(out)], capsys)
    assert code == 0, err
    with Image.open(out) as image:
        assert image.format == "JPEG" and image.size == (16, 16)
    assert sorted(p.name for p in out.parent.iterdir()) == ["grid.jpg"]


def test_unknown_pack_command_is_a_usage_error(capsys):
    code, err = run_cli(pack_main, ["generat"], capsys)
    assert code == 2 and "usage: python -m comfyui_flowmatch" in err


@pytest.mark.parametrize("args, expected", [
    (["--settings", "euler"], "must look like 'euler:20'"),
    (["--settings", "euler:0"], "must look like 'euler:20'"),
    (["--settings", "warp:20"], "unknown solver 'warp'"),
    (["--samples", "0"], "--samples: 0 is outside"),
    (["--json", "rows.txt"], "suffix '.txt'; use one of .json"),
])
def test_evaluate_refuses_bad_arguments(args, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(evaluate.main, ["--checkpoint", MISSING_CHECKPOINT, *args], capsys)
    assert_one_line_error(code, err, expected)


@pytest.mark.parametrize("args, expected", [
    (["--batches", "0"], "--batches: 0 is outside"),
    (["--method", "rk9"], "unknown solver 'rk9'"),
    (["--device", "tpu"], "'tpu' is not a torch device"),
    (["--device", "cuda:7"], "torch sees"),
    (["--repeats", "0"], "--repeats: 0 is outside"),
])
def test_benchmark_refuses_bad_arguments(args, expected, capsys):
    code, err = run_cli(benchmark.main, ["--checkpoint", MISSING_CHECKPOINT, *args], capsys)
    assert_one_line_error(code, err, expected)


TINY_TRAIN = ["--steps", "2", "--batch-size", "2", "--sample-every", "1000", "--dit-image-size", "16",
              "--dit-width", "32", "--dit-depth", "1", "--dit-heads", "2", "--dit-conv-channels", "8",
              "--text-dim", "16", "--text-depth", "1", "--text-heads", "2"]


@pytest.mark.parametrize("args, expected", [
    ({"--output": "model.ckpt"}, "suffix '.ckpt'; use one of .safetensors"),
    ({"--run-dir": "a_file"}, "--run-dir a_file is a file; give a folder"),
    ({"--data": "no_such_folder"}, "--data 'no_such_folder': no such folder"),
    ({"--lr": "0"}, "lr must be > 0, got 0.0"),
    ({"--lr": "nan"}, "'nan' is not a finite number"),
    ({"--dit-heads": "3"}, "heads"),
    ({"--threads": "0"}, "--threads: 0 is outside"),
    ({"--device": "gpu"}, "'gpu' is not a torch device"),
    ({"--t-sampling": "cosine"}, "t_sampling must be one of"),
    ({"--dit-width": "100000", "--dit-heads": "4"}, "training 300,032M parameters at batch 2 needs at least 5,588.5 GiB"),
    ({"--batch-size": "1000000000"}, "lower --dit-width/--dit-depth/--text-dim or --batch-size"),
])
def test_train_refuses_bad_arguments_before_training(args, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("x")
    options = {"--output": "model.safetensors", "--run-dir": "run", **args}
    code, err = run_cli(train.main, [*TINY_TRAIN, *(item for pair in options.items() for item in pair)], capsys)
    assert_one_line_error(code, err, expected)
    assert not (tmp_path / "model.safetensors").exists() and not (tmp_path / "run" / "train_state.safetensors").exists()
