"""Structural checks of a safetensors file before any tensor is read or allocated.

Two layers, both pure and cheap:

- `validate_header`: the safetensors JSON header itself, with the rules of the format
  (https://github.com/huggingface/safetensors, "Format"): ``__metadata__`` is an object
  of strings; every other entry is ``{"dtype": D, "shape": [ints], "data_offsets":
  [begin, end]}`` with D one of `DTYPE_BITS`, ``end - begin`` equal to the tensor's byte
  size, and the entries tiling the data section with no gap or overlap. Any file any
  tool may load (ComfyUI's own loader included) passes; everything else becomes a
  `CheckpointError` naming the file and the entry.
- `check_architecture`: the architecture and tokenizer in our metadata, typed and
  bounded by `ARCHITECTURE_LIMITS`, before a network is built from them.

Messages never quote the file's bytes: a symlink in a models folder can point at any
file, so a header that is not a safetensors JSON object is described, not shown.
Values from a header that did parse (tensor names, dtypes) are shown shortened.
"""

from __future__ import annotations

import math
import os

# Bits per element of every dtype the safetensors format defines (Rust crate 0.6, the
# Python package adds the FNUZ float8 variants).
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "I16": 16, "U16": 16, "I32": 32, "U32": 32, "I64": 64, "U64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
    "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "F16": 16, "BF16": 16, "F32": 32, "F64": 64, "C64": 64,
}
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors crate's own limit
MAX_NAME_CHARS = 60

# Ceilings on our own architecture fields: far above anything this pack trains (the bundled
# model is width 128, depth 6), far below sizes that cannot be allocated.
ARCHITECTURE_LIMITS = {
    "dit": {"image_size": 8192, "channels": 64, "patch": 64, "width": 16384, "depth": 128, "heads": 256,
            "text_dim": 16384, "conv_channels": 4096, "mlp_ratio": 16.0},
    "text": {"vocab_size": 1_000_000, "dim": 16384, "depth": 64, "heads": 256, "max_length": 8192},
}


class CheckpointError(ValueError):
    """A file is not a valid comfyui-flowmatch checkpoint; the message names the file and the problem."""


def shown(value: object) -> str:
    """A short repr of a header value for an error message."""
    text = repr(value)
    return text if len(text) <= MAX_NAME_CHARS else text[: MAX_NAME_CHARS - 3] + "..."


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _tensor_bytes(path: os.PathLike, name: str, info: object) -> tuple[int, int, int]:
    """(begin, end, byte size from dtype and shape) of one header entry, all checked."""
    where = f"{path}: tensor {shown(name)}"
    if not isinstance(info, dict):
        raise CheckpointError(f"{where}: header entry must be an object with dtype, shape, data_offsets")
    missing = [key for key in ("dtype", "shape", "data_offsets") if key not in info]
    if missing:
        raise CheckpointError(f"{where}: header entry lacks {', '.join(missing)}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise CheckpointError(f"{where}: dtype {shown(dtype)} is not a safetensors dtype ({', '.join(DTYPE_BITS)})")
    if not isinstance(shape, list) or not all(_is_int(n) and n >= 0 for n in shape):
        raise CheckpointError(f"{where}: shape {shown(shape)} must be a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(n) and n >= 0 for n in offsets)):
        raise CheckpointError(f"{where}: data_offsets {shown(offsets)} must be two non-negative integers")
    begin, end = offsets
    if end < begin:
        raise CheckpointError(f"{where}: data_offsets end {end} is before begin {begin}")
    bits = math.prod(shape) * DTYPE_BITS[dtype]
    if bits % 8 or bits // 8 != end - begin:
        raise CheckpointError(
            f"{where}: {dtype} {shape} needs {bits / 8:g} bytes but data_offsets span {end - begin}"
        )
    return begin, end, bits // 8


def validate_header(header: object, path: os.PathLike, data_len: int) -> None:
    """Check a parsed safetensors header against the format and a data section of
    `data_len` bytes.

    Raises:
        CheckpointError: naming `path` and the offending entry.
    """
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (header is not a JSON object)")
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path}: __metadata__ must be a JSON object of strings, got {type(metadata).__name__}")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise CheckpointError(
                f"{path}: __metadata__ entry {shown(key)} must be a string, got {type(value).__name__}"
            )
    spans = sorted(
        (_tensor_bytes(path, name, info)[:2], name) for name, info in header.items() if name != "__metadata__"
    )
    expected_begin = 0
    for (begin, end), name in spans:
        if end > data_len:
            raise CheckpointError(
                f"{path}: truncated file: tensor {shown(name)} ends at byte {end} of a {data_len}-byte data section"
            )
        if begin < expected_begin:
            raise CheckpointError(f"{path}: tensor {shown(name)} overlaps the previous tensor's bytes")
        if begin > expected_begin:
            raise CheckpointError(f"{path}: gap before tensor {shown(name)} (bytes {expected_begin}..{begin} unused)")
        expected_begin = end
    if expected_begin != data_len:
        raise CheckpointError(
            f"{path}: {data_len - expected_begin} bytes after the last tensor belong to no tensor "
            "(damaged or not a safetensors file)"
        )


def _check_fields(path: os.PathLike, part: str, config: object) -> None:
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: metadata {part}_config must be a JSON object")
    for field, ceiling in ARCHITECTURE_LIMITS[part].items():
        if field not in config:
            continue  # a missing field takes the dataclass default, itself within limits
        value = config[field]
        numeric = _is_int(value) or (isinstance(ceiling, float) and isinstance(value, float))
        if not numeric:
            raise CheckpointError(f"{path}: {part}_config {field} must be a number, got {shown(value)}")
        if not 0 < value <= ceiling:
            allowed = f"(0, {ceiling:g}]" if isinstance(ceiling, float) else f"1..{ceiling}"
            raise CheckpointError(
                f"{path}: {part}_config {field} = {value} is outside {allowed}; refusing to build a network "
                "that size (the file is damaged or not made by this pack)"
            )


def check_architecture(path: os.PathLike, metadata: dict) -> None:
    """Type- and range-check our architecture and tokenizer metadata (`read_metadata`'s
    parsed form) before any module is built.

    Raises:
        CheckpointError: naming the field, its value and the limit.
    """
    _check_fields(path, "dit", metadata["config"]["dit"])
    _check_fields(path, "text", metadata["config"]["text"])
    tokenizer = metadata["tokenizer"]
    vocab = tokenizer.get("vocab")
    if not (isinstance(vocab, list) and all(isinstance(word, str) for word in vocab)):
        raise CheckpointError(f"{path}: metadata tokenizer vocab must be a list of strings")
    if len(vocab) > ARCHITECTURE_LIMITS["text"]["vocab_size"]:
        raise CheckpointError(f"{path}: metadata tokenizer vocab has {len(vocab)} words, over the limit")
    if not _is_int(tokenizer.get("max_length")):
        raise CheckpointError(f"{path}: metadata tokenizer max_length must be an integer, got "
                              f"{shown(tokenizer.get('max_length'))}")
