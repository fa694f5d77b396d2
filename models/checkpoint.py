"""The checkpoint format: one ``.safetensors`` file, validated before any tensor is read.

Tensors: ``dit.<name>`` (the `FlowDiT` state dict) and ``text.<name>`` (the
`TextEncoder` state dict), stored in fp16 by default. The safetensors header
metadata (string -> string) holds JSON values under these keys:

- ``format``: ``"comfyui-flowmatch"``; ``format_version``: ``"1"``
- ``dit_config``, ``text_config``: the architecture (`DiTConfig`, `TextConfig` fields)
- ``tokenizer``: ``{"vocab": [...], "max_length": L}``
- ``latent``: ``{"space": "pixel", "channels": 3, "height": 32, "width": 32,
  "range": [-1, 1], "layout": "NCHW"}``
- ``training``: facts about the run (steps, data, final loss, ...)

Never unpickles: pickle / ``torch.save`` files are refused by their magic bytes.
Writes are atomic (temporary file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .checkpoint_validate import MAX_HEADER_BYTES, CheckpointError, check_architecture, shown, validate_header
from .dit import DiTConfig, FlowDiT
from .text import TextConfig, TextEncoder, Tokenizer

FORMAT_NAME = "comfyui-flowmatch"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})
METADATA_KEYS = ("format", "format_version", "dit_config", "text_config", "tokenizer", "latent", "training")
# What our own weights may be stored as (torch reads them all; `load_checkpoint` upcasts to fp32).
WEIGHT_DTYPES = frozenset({"F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2"})

@dataclass
class FlowMatchBundle:
    """A loaded checkpoint: networks in eval mode, tokenizer and parsed metadata.

    `metadata` has keys ``format``, ``version``, ``config`` (``{"dit": ..., "text": ...}``),
    ``latent`` and ``training``.
    """

    dit: FlowDiT
    text_encoder: TextEncoder
    tokenizer: Tokenizer
    metadata: dict


def latent_description(config: DiTConfig) -> dict:
    """The latent-space facts stored in a checkpoint for a given architecture."""
    return {
        "space": "pixel",
        "channels": config.channels,
        "height": config.image_size,
        "width": config.image_size,
        "range": [-1.0, 1.0],
        "layout": "NCHW",
    }


def _sniff_refusal(head: bytes, size: int) -> str | None:
    """Why the first 9 bytes are a pickle or zip, not safetensors. A safetensors file is
    recognised first (a fitting header length, then `{`): its length's low byte may be
    0x80 or spell "PK"."""
    if len(head) == 9 and struct.unpack("<Q", head[:8])[0] <= size - 8 and head[8:9] == b"{":
        return None
    if head[:1] == b"\x80":
        return "it is a Python pickle (refusing to unpickle: pickles can run code)"
    if head[:2] == b"PK":
        return "it is a zip archive, probably a torch.save/.ckpt pickle (refusing to unpickle)"
    return None


def read_header(path: str | os.PathLike) -> dict:
    """Parse and check the safetensors JSON header of `path` without reading tensors
    (`checkpoint_validate.validate_header`: every dtype of the format is accepted).

    Symlinks are followed, as ComfyUI's own model lists do; the target must be a regular
    file, and no error message quotes its bytes.

    Raises:
        CheckpointError: missing or non-regular file, pickle/zip file, not safetensors,
            truncated, malformed header entry (naming the entry).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a regular file (a folder, device or pipe); a checkpoint must be a file")
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(9)
        refusal = _sniff_refusal(head, size)
        if refusal:
            raise CheckpointError(f"{path}: not a safetensors file: {refusal}")
        if size < 8:
            raise CheckpointError(f"{path}: not a safetensors file (only {size} bytes)")
        (header_len,) = struct.unpack("<Q", head[:8])
        if header_len > min(size - 8, MAX_HEADER_BYTES):
            raise CheckpointError(
                f"{path}: not a safetensors file, or truncated: its first 8 bytes do not give a header length "
                f"that fits in the file ({size} bytes)"
            )
        f.seek(8)
        raw = f.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        problem = f"not UTF-8 text at byte {err.start}"
        raise CheckpointError(f"{path}: not a safetensors file (header is not JSON: {problem})") from None
    except json.JSONDecodeError as err:
        problem = f"{err.msg} at byte {err.pos}"
        raise CheckpointError(f"{path}: not a safetensors file (header is not JSON: {problem})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: not a safetensors file (header JSON nested too deeply)") from None
    validate_header(header, path, size - 8 - header_len)
    return header


def read_metadata(path: str | os.PathLike) -> dict:
    """The parsed comfyui-flowmatch metadata of `path`, reading only the header.

    Returns:
        ``{"format", "version", "config": {"dit", "text"}, "tokenizer", "latent", "training"}``.

    Raises:
        CheckpointError: not safetensors, not our format, unknown version, bad metadata.
    """
    path = Path(path)
    raw = read_header(path).get("__metadata__") or {}
    if raw.get("format") != FORMAT_NAME:
        found = shown(raw["format"]) if "format" in raw else "no 'format' key"
        raise CheckpointError(f"{path}: not a {FORMAT_NAME} checkpoint (metadata format: {found})")
    missing = [k for k in METADATA_KEYS if k not in raw]
    if missing:
        raise CheckpointError(f"{path}: metadata is missing key(s) {missing}")
    if raw["format_version"] not in {str(v) for v in SUPPORTED_VERSIONS}:
        raise CheckpointError(
            f"{path}: unknown format version {shown(raw['format_version'])}; "
            f"this code reads {sorted(SUPPORTED_VERSIONS)}"
        )
    parsed = {}
    for key in ("dit_config", "text_config", "tokenizer", "latent", "training"):
        try:
            parsed[key] = json.loads(raw[key])
        except (json.JSONDecodeError, RecursionError):
            raise CheckpointError(f"{path}: metadata {key!r} is not valid JSON") from None
        if not isinstance(parsed[key], dict):
            raise CheckpointError(f"{path}: metadata {key!r} must be a JSON object")
    return {
        "format": raw["format"],
        "version": int(raw["format_version"]),
        "config": {"dit": parsed["dit_config"], "text": parsed["text_config"]},
        "tokenizer": parsed["tokenizer"],
        "latent": parsed["latent"],
        "training": parsed["training"],
    }


def is_flowmatch_checkpoint(path: str | os.PathLike) -> bool:
    """True when `path` is a valid comfyui-flowmatch checkpoint header (reads only the header)."""
    try:
        read_metadata(path)
    except CheckpointError:
        return False
    return True


def build_configs(metadata: dict, path: Path) -> tuple[DiTConfig, TextConfig, Tokenizer]:
    """The architecture and tokenizer from parsed metadata, checked for types, limits and
    consistency; nothing is allocated."""
    check_architecture(path, metadata)
    try:
        dit_config = DiTConfig(**metadata["config"]["dit"])
        text_config = TextConfig(**metadata["config"]["text"])
        tokenizer = Tokenizer(vocab=tuple(metadata["tokenizer"]["vocab"]),
                              max_length=metadata["tokenizer"]["max_length"])
    except (TypeError, KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: invalid architecture or tokenizer in metadata: {err}") from None
    if len(tokenizer.vocab) != text_config.vocab_size or tokenizer.max_length != text_config.max_length:
        raise CheckpointError(
            f"{path}: tokenizer ({len(tokenizer.vocab)} words, length {tokenizer.max_length}) does not match "
            f"text_config (vocab_size {text_config.vocab_size}, max_length {text_config.max_length})"
        )
    if dit_config.text_dim != text_config.dim:
        raise CheckpointError(f"{path}: dit text_dim {dit_config.text_dim} != text encoder dim {text_config.dim}")
    latent = metadata["latent"]
    if latent != json.loads(json.dumps(latent_description(dit_config))):
        raise CheckpointError(f"{path}: latent description {shown(latent)} does not match the architecture")
    return dit_config, text_config, tokenizer


def expected_shapes(dit_config: DiTConfig, text_config: TextConfig) -> dict[str, tuple[int, ...]]:
    """Checkpoint key -> tensor shape for an architecture, from networks built on the meta
    device (no memory is allocated, whatever the sizes)."""
    with torch.device("meta"):
        dit, text_encoder = FlowDiT(dit_config), TextEncoder(text_config)
    shapes = {f"dit.{k}": tuple(v.shape) for k, v in dit.state_dict().items()}
    shapes.update({f"text.{k}": tuple(v.shape) for k, v in text_encoder.state_dict().items()})
    return shapes


def _check_tensors(header: dict, expected: dict[str, tuple[int, ...]], path: Path) -> None:
    stored = {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    missing = sorted(set(expected) - set(stored))
    if missing:
        raise CheckpointError(f"{path}: missing tensor(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    unexpected = sorted(set(stored) - set(expected))
    if unexpected:
        shown_names = ", ".join(shown(name) for name in unexpected[:5])
        raise CheckpointError(f"{path}: unexpected tensor(s) {shown_names}{' ...' if len(unexpected) > 5 else ''}")
    wrong = [f"{k} {stored[k]} (expected {expected[k]})" for k in expected if stored[k] != expected[k]]
    if wrong:
        raise CheckpointError(f"{path}: wrong tensor shape(s): {'; '.join(wrong[:5])}")
    not_float = [f"{k} ({header[k]['dtype']})" for k in expected if header[k]["dtype"] not in WEIGHT_DTYPES]
    if not_float:
        raise CheckpointError(
            f"{path}: weights must be stored as one of {sorted(WEIGHT_DTYPES)}; found {', '.join(not_float[:5])}"
        )


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> FlowMatchBundle:
    """Validate and load a checkpoint; networks come back in eval mode, fp32, on `device`.

    Order: header structure, metadata, architecture limits, tensor names, shapes and
    dtypes against the architecture (built on the meta device), and only then real
    networks, whose size the file's own tensors bound.

    Raises:
        CheckpointError: anything wrong (not safetensors, pickle, truncated, malformed
            header, other format, unknown version, out-of-range architecture,
            missing/unexpected tensors, wrong shapes or dtypes); the message names the
            file and the problem.
    """
    path = Path(path)
    header = read_header(path)
    metadata = read_metadata(path)
    dit_config, text_config, tokenizer = build_configs(metadata, path)
    expected = expected_shapes(dit_config, text_config)
    _check_tensors(header, expected, path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            tensors = {k: f.get_tensor(k).float() for k in expected}
    except (SafetensorError, OSError, RuntimeError) as err:
        raise CheckpointError(f"{path}: could not read tensors: {err}") from None
    dit, text_encoder = FlowDiT(dit_config), TextEncoder(text_config)
    dit.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("dit.")})
    text_encoder.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("text.")})
    return FlowMatchBundle(
        dit=dit.to(device).eval(),
        text_encoder=text_encoder.to(device).eval(),
        tokenizer=tokenizer,
        metadata=metadata,
    )


def atomic_save_file(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """`safetensors.torch.save_file` to a temporary sibling, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a checkpoint is a normal shared file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(
    path: str | os.PathLike,
    dit: FlowDiT,
    text_encoder: TextEncoder,
    tokenizer: Tokenizer,
    training: dict,
    dtype: torch.dtype = torch.float16,
) -> None:
    """Write a checkpoint atomically; tensors are stored as `dtype` (fp16 by default)."""
    tensors = {f"dit.{k}": v.detach().to("cpu", dtype).contiguous() for k, v in dit.state_dict().items()}
    tensors.update(
        {f"text.{k}": v.detach().to("cpu", dtype).contiguous() for k, v in text_encoder.state_dict().items()}
    )
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "dit_config": json.dumps(dit.config.to_dict()),
        "text_config": json.dumps(text_encoder.config.to_dict()),
        "tokenizer": json.dumps({"vocab": list(tokenizer.vocab), "max_length": tokenizer.max_length}),
        "latent": json.dumps(latent_description(dit.config)),
        "training": json.dumps(training),
    }
    atomic_save_file(tensors, Path(path), metadata)
