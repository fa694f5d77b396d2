"""Every malformed header becomes a CheckpointError naming the file and the entry, every
dtype the safetensors format defines is accepted, our architecture is checked before
anything is allocated, and no message quotes the file's bytes."""

import json
import os
import struct

import pytest
import torch

from comfyui_flowmatch.models.checkpoint import CheckpointError, load_checkpoint, read_header, save_checkpoint
from comfyui_flowmatch.models.checkpoint_validate import DTYPE_BITS
from comfyui_flowmatch.models.dit import DiTConfig, FlowDiT
from comfyui_flowmatch.models.text import TextConfig, TextEncoder, Tokenizer, encode_prompts

pytestmark = pytest.mark.unit

CAPTIONS = ["a red circle", "a blue square"]


def tiny_networks():
    torch.manual_seed(0)
    tokenizer = Tokenizer.from_captions(CAPTIONS, max_length=8)
    dit = FlowDiT(DiTConfig(image_size=16, patch=4, width=32, depth=1, heads=2, text_dim=16, conv_channels=8))
    text = TextEncoder(TextConfig(vocab_size=len(tokenizer.vocab), dim=16, depth=1, heads=2, max_length=8))
    with torch.no_grad():
        for p in [*dit.parameters(), *text.parameters()]:
            p.copy_(torch.randn_like(p) * 0.1)
    return dit.eval(), text.eval(), tokenizer


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    path = tmp_path_factory.mktemp("valid") / "tiny.safetensors"
    save_checkpoint(path, *tiny_networks(), training={}, dtype=torch.float32)
    return path


def split(path):
    """(header dict, data bytes) of a safetensors file."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def write(path, header, data: bytes = b""):
    text = json.dumps(header).encode() if not isinstance(header, bytes) else header
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


def first_tensor(header):
    return next(k for k in header if k != "__metadata__")


def refused(path) -> str:
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "Traceback" not in message
    return message


def mutate_entry(change):
    def apply(header):
        change(header[first_tensor(header)])
    return apply


def set_metadata(key, value):
    def apply(header):
        header["__metadata__"][key] = value
    return apply


def set_config(part, field, value):
    def apply(header):
        config = json.loads(header["__metadata__"][part])
        config[field] = value
        header["__metadata__"][part] = json.dumps(config)
    return apply


HEADER_CASES = {
    "metadata is a list": (lambda h: h.__setitem__("__metadata__", ["format"]), "__metadata__ must be a JSON object"),
    "metadata value is an object": (set_metadata("dit_config", {"width": 32}), "'dit_config' must be a string"),
    "metadata value is a number": (set_metadata("format_version", 1), "'format_version' must be a string"),
    "entry is a list": (lambda h: h.__setitem__(first_tensor(h), [1, 2]), "header entry must be an object"),
    "entry lacks dtype": (mutate_entry(lambda e: e.pop("dtype")), "lacks dtype"),
    "dtype is a list": (mutate_entry(lambda e: e.__setitem__("dtype", ["F32"])), "dtype ['F32'] is not a safetensors"),
    "unknown dtype": (mutate_entry(lambda e: e.__setitem__("dtype", "F7")), "dtype 'F7' is not a safetensors dtype"),
    "tensor without a shape": (mutate_entry(lambda e: e.pop("shape")), "lacks shape"),
    "shape is a string": (mutate_entry(lambda e: e.__setitem__("shape", "32")), "shape '32' must be a list"),
    "negative dimension": (mutate_entry(lambda e: e.__setitem__("shape", [-1, 32])), "non-negative integers"),
    "float dimension": (mutate_entry(lambda e: e.__setitem__("shape", [2.5])), "non-negative integers"),
    "string offset": (mutate_entry(lambda e: e.__setitem__("data_offsets", ["0", 4])), "data_offsets ['0', 4]"),
    "one offset": (mutate_entry(lambda e: e.__setitem__("data_offsets", [0])), "must be two non-negative integers"),
    "float offsets": (mutate_entry(lambda e: e.__setitem__("data_offsets", [0.0, 4.0])), "two non-negative integers"),
    "boolean offsets": (mutate_entry(lambda e: e.__setitem__("data_offsets", [False, True])), "two non-negative"),
    "end before begin": (mutate_entry(lambda e: e.__setitem__("data_offsets", [8, 4])), "end 4 is before begin 8"),
    "offset past the data": (mutate_entry(lambda e: e.__setitem__("data_offsets", [0, 10**12])), "bytes but data_offsets span"),
    "shape and offsets disagree": (mutate_entry(lambda e: e.__setitem__("shape", [1])), "needs 4 bytes but data_offsets span"),
}


@pytest.mark.parametrize("case", HEADER_CASES, ids=list(HEADER_CASES))
def test_malformed_header_entry_is_refused_naming_file_and_entry(valid, tmp_path, case):
    change, expected = HEADER_CASES[case]
    header, data = split(valid)
    change(header)
    message = refused(write(tmp_path / "bad.safetensors", header, data))
    assert expected in message, message


def two_tensors(tmp_path, first, second, data_len):
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": first},
              "b": {"dtype": "F32", "shape": [2], "data_offsets": second}}
    return write(tmp_path / "two.safetensors", header, bytes(data_len))


@pytest.mark.parametrize("first, second, data_len, expected", [
    ([0, 8], [4, 12], 12, "tensor 'b' overlaps"),
    ([0, 8], [0, 8], 8, "overlaps"),
    ([0, 8], [12, 20], 20, "gap before tensor 'b' (bytes 8..12 unused)"),
    ([0, 8], [8, 16], 24, "8 bytes after the last tensor belong to no tensor"),
    ([0, 8], [8, 16], 12, "truncated file: tensor 'b' ends at byte 16 of a 12-byte data section"),
], ids=["overlap", "same bytes", "gap", "trailing bytes", "out of range"])
def test_offsets_must_tile_the_data_section(tmp_path, first, second, data_len, expected):
    with pytest.raises(CheckpointError, match="two.safetensors") as err:
        read_header(two_tensors(tmp_path, first, second, data_len))
    assert expected in str(err.value)


@pytest.mark.parametrize("header, expected", [
    (b"[1, 2, 3]", "header is not a JSON object"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"a": ', "header is not JSON: Expecting value"),
    (b"\xff\xfe{}", "not UTF-8 text at byte 0"),
], ids=["json array", "deep nesting", "cut json", "not utf-8"])
def test_header_that_is_not_a_json_object_is_refused(tmp_path, header, expected):
    assert expected in refused(write(tmp_path / "h.safetensors", header))


@pytest.mark.parametrize("dtype", sorted(DTYPE_BITS))
def test_every_safetensors_dtype_is_accepted(tmp_path, dtype):
    elements = 8  # a whole number of bytes for 4- and 6-bit types too
    nbytes = elements * DTYPE_BITS[dtype] // 8
    header = {"__metadata__": {"note": "x"}, "w": {"dtype": dtype, "shape": [2, 4], "data_offsets": [0, nbytes]}}
    assert read_header(write(tmp_path / f"{dtype}.safetensors", header, bytes(nbytes)))["w"]["dtype"] == dtype


def velocity(bundle):
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 3, 16, 16, generator=g), torch.rand(2, generator=g)
    ctx, pooled = encode_prompts(bundle.tokenizer, bundle.text_encoder, CAPTIONS)
    return bundle.dit(x, t, ctx, pooled)


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2], ids=["F8_E4M3", "F8_E5M2"])
def test_fp8_checkpoint_of_ours_loads_with_fp8_rounded_weights(tmp_path, dtype):
    dit, text, tokenizer = tiny_networks()
    path = tmp_path / "fp8.safetensors"
    save_checkpoint(path, dit, text, tokenizer, training={}, dtype=dtype)
    bundle = load_checkpoint(path)
    for name, weight in dit.state_dict().items():  # reference: torch's own fp8 rounding of each weight
        assert torch.equal(bundle.dit.state_dict()[name], weight.to(dtype).float()), name
    assert torch.isfinite(velocity(bundle)).all()


def resave(valid, tmp_path, change, name="changed.safetensors"):
    header, data = split(valid)
    change(header)
    return write(tmp_path / name, header, data)


@pytest.mark.parametrize("part, field, value, expected", [
    ("dit_config", "width", 10**6, "dit_config width = 1000000 is outside 1..16384"),
    ("dit_config", "depth", 10**9, "dit_config depth = 1000000000 is outside 1..128"),
    ("dit_config", "width", "32", "dit_config width must be a number, got '32'"),
    ("dit_config", "width", True, "dit_config width must be a number, got True"),
    ("dit_config", "mlp_ratio", 1e9, "mlp_ratio = 1000000000.0 is outside (0, 16]"),
    ("dit_config", "heads", 0, "heads = 0 is outside"),
    ("text_config", "vocab_size", 10**12, "text_config vocab_size = 1000000000000 is outside"),
    ("dit_config", "flavour", "x", "unexpected keyword argument 'flavour'"),
], ids=["width 1e6", "depth 1e9", "width string", "width bool", "mlp_ratio 1e9", "heads 0", "vocab 1e12",
        "unknown field"])
def test_architecture_out_of_limits_is_refused_before_building(valid, tmp_path, part, field, value, expected):
    message = refused(resave(valid, tmp_path, set_config(part, field, value)))
    assert expected in message, message


def test_architecture_within_limits_but_unlike_the_tensors_is_refused_without_allocating(valid, tmp_path):
    # width 16384, depth 128 would be ~3e11 parameters (over a terabyte): the shapes are compared
    # on the meta device, so this returns quickly with a shape error instead of allocating.
    path = resave(valid, tmp_path, lambda h: (set_config("dit_config", "width", 16384)(h),
                                             set_config("dit_config", "depth", 128)(h)))
    message = refused(path)
    assert "missing tensor(s)" in message or "wrong tensor shape" in message, message


@pytest.mark.parametrize("key, value, expected", [
    ("tokenizer", json.dumps({"vocab": "abc", "max_length": 8}), "tokenizer vocab must be a list of strings"),
    ("tokenizer", json.dumps({"vocab": [1, 2], "max_length": 8}), "tokenizer vocab must be a list of strings"),
    ("tokenizer", json.dumps({"vocab": ["[PAD]"], "max_length": "8"}), "max_length must be an integer"),
    ("training", "[1, 2]", "metadata 'training' must be a JSON object"),
    ("latent", "{not json", "metadata 'latent' is not valid JSON"),
    ("dit_config", "[" * 100_000, "metadata 'dit_config' is not valid JSON"),
], ids=["vocab string", "vocab numbers", "max_length string", "training list", "latent not json", "deep json"])
def test_malformed_metadata_values_are_refused(valid, tmp_path, key, value, expected):
    message = refused(resave(valid, tmp_path, set_metadata(key, value)))
    assert expected in message, message


def test_integer_weights_are_refused_for_our_format(valid, tmp_path):
    header, data = split(valid)
    name = first_tensor(header)
    header[name]["dtype"] = "I32"  # same byte size: the header is sound, the weights are not floats
    message = refused(write(tmp_path / "ints.safetensors", header, data))
    assert "weights must be stored as one of" in message and "(I32)" in message, message


SECRET = b"SECRET-password-1234\n" * 4


def test_errors_never_quote_a_symlinked_files_bytes(tmp_path):
    target = tmp_path / "private.txt"
    target.write_bytes(SECRET)
    link = tmp_path / "model.safetensors"
    link.symlink_to(target)
    message = refused(link)
    head_as_number = str(struct.unpack("<Q", SECRET[:8])[0])
    assert "SECRET" not in message and "password" not in message and head_as_number not in message, message
    assert "first 8 bytes do not give a header length" in message


def test_symlink_to_a_valid_checkpoint_is_followed(valid, tmp_path):
    link = tmp_path / "linked.safetensors"
    link.symlink_to(valid)
    assert load_checkpoint(link).metadata["config"]["dit"]["width"] == 32


def test_symlink_to_a_pipe_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # opening it for reading would block forever
    link = tmp_path / "pipe.safetensors"
    link.symlink_to(fifo)
    assert "not a regular file" in refused(link)


def test_dangling_symlink_is_a_missing_file(tmp_path):
    link = tmp_path / "gone.safetensors"
    link.symlink_to(tmp_path / "nowhere")
    assert "no such checkpoint file" in refused(link)


@pytest.mark.parametrize("header_length", [0x180, 0x4B50], ids=["starts 0x80 like a pickle", "starts 'PK' like a zip"])
def test_valid_file_whose_length_bytes_look_like_a_pickle_or_zip_is_read(tmp_path, header_length):
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    header += b" " * (header_length - len(header))  # safetensors pads headers with spaces too
    path = tmp_path / "padded.safetensors"
    path.write_bytes(struct.pack("<Q", header_length) + header + bytes(4))
    assert path.read_bytes()[:1] in (b"\x80", b"P")
    assert read_header(path)["w"]["shape"] == [1]
