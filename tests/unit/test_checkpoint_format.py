"""Checkpoint format: round trip, metadata-only reads, and specific refusals."""

import json
import pickle
import struct

import pytest
import torch
from safetensors.torch import save_file

from comfyui_flowmatch.models.checkpoint import (
    CheckpointError, is_flowmatch_checkpoint, load_checkpoint, read_metadata, save_checkpoint,
)
from comfyui_flowmatch.models.dit import DiTConfig, FlowDiT
from comfyui_flowmatch.models.text import TextConfig, TextEncoder, Tokenizer, encode_prompts

pytestmark = pytest.mark.unit

CAPTIONS = ["a red circle on a black background", "a blue square on a gray background in the center"]


def tiny_networks(width: int = 32):
    torch.manual_seed(0)
    tokenizer = Tokenizer.from_captions(CAPTIONS, max_length=12)
    dit = FlowDiT(DiTConfig(image_size=16, patch=4, width=width, depth=1, heads=2, text_dim=16, conv_channels=8))
    text = TextEncoder(TextConfig(vocab_size=len(tokenizer.vocab), dim=16, depth=1, heads=2, max_length=12))
    with torch.no_grad():
        for p in [*dit.parameters(), *text.parameters()]:
            p.copy_(torch.randn_like(p) * 0.1)
    return dit.eval(), text.eval(), tokenizer


@pytest.fixture()
def saved(tmp_path):
    dit, text, tokenizer = tiny_networks()
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(path, dit, text, tokenizer, training={"steps": 3, "data": "shapes", "final_loss": 0.5},
                    dtype=torch.float32)
    return path, dit, text, tokenizer


def velocity(dit, text, tokenizer):
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 3, 16, 16, generator=g), torch.rand(2, generator=g)
    ctx, pooled = encode_prompts(tokenizer, text, CAPTIONS)
    return dit(x, t, ctx, pooled)


def test_round_trip_gives_identical_outputs(saved):
    path, dit, text, tokenizer = saved
    bundle = load_checkpoint(path)
    assert bundle.tokenizer == tokenizer
    assert torch.equal(velocity(bundle.dit, bundle.text_encoder, bundle.tokenizer), velocity(dit, text, tokenizer))
    meta = bundle.metadata
    assert meta["format"] == "comfyui-flowmatch" and meta["version"] == 1
    assert meta["config"]["dit"]["width"] == 32 and meta["training"]["steps"] == 3
    assert meta["latent"] == {"space": "pixel", "channels": 3, "height": 16, "width": 16,
                              "range": [-1.0, 1.0], "layout": "NCHW"}


def test_fp16_storage_round_trips_closely(tmp_path):
    dit, text, tokenizer = tiny_networks()
    path = tmp_path / "half.safetensors"
    save_checkpoint(path, dit, text, tokenizer, training={})
    bundle = load_checkpoint(path)
    assert next(bundle.dit.parameters()).dtype == torch.float32
    assert torch.allclose(velocity(bundle.dit, bundle.text_encoder, tokenizer), velocity(dit, text, tokenizer),
                          atol=1e-2)


def test_metadata_reads_only_the_header(saved):
    path = saved[0]
    assert is_flowmatch_checkpoint(path) and read_metadata(path)["tokenizer"]["max_length"] == 12


def test_save_is_atomic_and_leaves_no_temp_files(saved, tmp_path):
    path, dit, text, tokenizer = saved
    save_checkpoint(path, dit, text, tokenizer, training={})
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.safetensors"]


def rewrite_metadata(path, out, **changes):
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    meta.update(changes)
    save_file(tensors, str(out), metadata={k: v for k, v in meta.items() if v is not None})
    return out


def refused(path, header_ok: bool = False) -> str:
    """The load error message; `header_ok`: the header alone still looks like our format."""
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)
    assert is_flowmatch_checkpoint(path) == header_ok
    return str(err.value)


def test_pickle_file_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "model.ckpt"
    path.write_bytes(pickle.dumps({"x": 1}))
    assert "pickle" in refused(path)


def test_torch_save_zip_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, path)
    assert "torch.save" in refused(path)


def test_truncated_file_is_refused(saved, tmp_path):
    data = saved[0].read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: len(data) - 100])
    assert "truncated" in refused(path)


def test_corrupted_header_is_refused(saved, tmp_path):
    data = bytearray(saved[0].read_bytes())
    data[8:12] = b"\xff\xfe\x00{"
    path = tmp_path / "bad.safetensors"
    path.write_bytes(bytes(data))
    assert "not JSON" in refused(path)


def test_random_bytes_are_refused(tmp_path):
    path = tmp_path / "noise.safetensors"
    path.write_bytes(struct.pack("<Q", 10**12) + b"abc")
    assert "not a safetensors file" in refused(path)


def test_missing_file_is_refused(tmp_path):
    assert "no such checkpoint file" in refused(tmp_path / "absent.safetensors")


def test_plain_safetensors_of_another_model_is_refused(tmp_path):
    path = tmp_path / "sd3.safetensors"
    save_file({"joint_blocks.0.x": torch.zeros(2)}, str(path))
    assert "not a comfyui-flowmatch checkpoint" in refused(path)


def test_unknown_format_version_is_refused(saved, tmp_path):
    path = rewrite_metadata(saved[0], tmp_path / "v9.safetensors", format_version="9")
    assert "unknown format version '9'" in refused(path)


def test_missing_metadata_key_is_refused(saved, tmp_path):
    path = rewrite_metadata(saved[0], tmp_path / "nolatent.safetensors", latent=None)
    assert "missing key(s) ['latent']" in refused(path)


def test_wrong_architecture_is_refused_naming_the_tensor(saved, tmp_path):
    config = read_metadata(saved[0])["config"]["dit"]
    path = rewrite_metadata(saved[0], tmp_path / "wide.safetensors", dit_config=json.dumps({**config, "width": 64}))
    message = refused(path, header_ok=True)
    assert "wrong tensor shape" in message and "expected" in message


def test_missing_tensor_is_refused(saved, tmp_path):
    from safetensors import safe_open
    with safe_open(str(saved[0]), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys() if k != "dit.unpatch.bias"}
    path = tmp_path / "partial.safetensors"
    save_file(tensors, str(path), metadata=meta)
    assert "missing tensor(s) ['dit.unpatch.bias']" in refused(path, header_ok=True)


def test_invalid_config_value_is_refused(saved, tmp_path):
    config = read_metadata(saved[0])["config"]["dit"]
    path = rewrite_metadata(saved[0], tmp_path / "p5.safetensors", dit_config=json.dumps({**config, "patch": 5}))
    assert "invalid architecture" in refused(path, header_ok=True)
