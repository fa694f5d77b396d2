"""Word-level tokenizer and a small transformer text encoder.

Token ids have a fixed length ``max_length``: ``[CLS] word ... word [PAD] ...``.
The empty prompt ``""`` encodes to ``[CLS]`` and pads only: it is the
unconditional embedding for classifier-free guidance (training drops ~10% of
captions to ``""``). Unknown words map to ``[UNK]`` and over-long prompts are
truncated; both are reported with `warnings.warn` naming the words, never raised.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config_checks import require_positive

PAD, UNK, CLS = "[PAD]", "[UNK]", "[CLS]"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, CLS)
MAX_WORDS_SHOWN = 12  # a pasted book must not become a megabyte of warning text
# Words are runs of letters/digits; other visible characters (emoji, NUL, symbols)
# become one token each; common punctuation is dropped silently.
_TOKEN_RE = re.compile(r"[^\W_]+|[^\w\s.,;:!?'\"()\-]")


def split_words(prompt: str) -> list[str]:
    """Lower-cased word tokens of `prompt` (no vocabulary lookup)."""
    return _TOKEN_RE.findall(prompt.lower())


@dataclass(frozen=True)
class Tokenizer:
    """Word-level tokenizer; its vocabulary travels inside the checkpoint.

    Attributes:
        vocab: token strings, index = id; starts with `SPECIAL_TOKENS`.
        max_length: L, the fixed length of every id sequence (``[CLS]`` included).
    """

    vocab: tuple[str, ...]
    max_length: int = 16

    def __post_init__(self) -> None:
        if tuple(self.vocab[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"vocab must start with {SPECIAL_TOKENS}, got {tuple(self.vocab[:3])}")
        if len(set(self.vocab)) != len(self.vocab):
            raise ValueError("vocab has duplicate tokens")
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")
        object.__setattr__(self, "_index", {w: i for i, w in enumerate(self.vocab)})

    @classmethod
    def from_captions(cls, captions: list[str], max_length: int = 16) -> "Tokenizer":
        """Build the vocabulary from the words of `captions` (sorted, deterministic)."""
        words = sorted({w for c in captions for w in split_words(c)} - set(SPECIAL_TOKENS))
        return cls(vocab=(*SPECIAL_TOKENS, *words), max_length=max_length)

    @property
    def pad_id(self) -> int:
        return 0

    def encode(self, prompt: str) -> tuple[list[int], list[str]]:
        """Ids (length `max_length`) for one prompt, and the problems found.

        Returns:
            (ids, problems): problems are human-readable notes on unknown words
            and truncation; they are also emitted with `warnings.warn`.
        """
        words = split_words(prompt)
        problems = []
        unknown = [w for w in words if w not in self._index]
        if unknown:
            distinct = list(dict.fromkeys(unknown))
            shown = ", ".join(repr(w) for w in distinct[:MAX_WORDS_SHOWN])
            more = f" and {len(distinct) - MAX_WORDS_SHOWN} more" if len(distinct) > MAX_WORDS_SHOWN else ""
            problems.append(f"unknown words mapped to {UNK}: {shown}{more}")
        room = self.max_length - 1
        if len(words) > room:
            dropped = words[room:]
            tail = " ".join(dropped[:8]) + (" ..." if len(dropped) > 8 else "")
            problems.append(f"prompt truncated to {room} words; dropped {len(dropped)}: {tail!r}")
            words = words[:room]
        ids = [self._index[CLS], *(self._index.get(w, self._index[UNK]) for w in words)]
        ids += [self.pad_id] * (self.max_length - len(ids))
        for problem in problems:
            warnings.warn(f"prompt {prompt[:60]!r}: {problem}", stacklevel=2)
        return ids, problems

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        """Ids [B, max_length] (int64) for a list of prompts."""
        return torch.tensor([self.encode(p)[0] for p in prompts], dtype=torch.long)


@dataclass(frozen=True)
class TextConfig:
    """Text encoder shape: vocab size, width D, depth, heads, sequence length L."""

    vocab_size: int
    dim: int = 128
    depth: int = 2
    heads: int = 4
    max_length: int = 16

    def __post_init__(self) -> None:
        require_positive(self, ("vocab_size", "dim", "depth", "heads", "max_length"))
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} must be divisible by heads {self.heads}")

    def to_dict(self) -> dict:
        return asdict(self)


class EncoderBlock(nn.Module):
    """Pre-norm self-attention + MLP block; padded keys are masked out."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """x [B, L, D]; key_mask [B, 1, 1, L] bool, True = attend."""
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class TextEncoder(nn.Module):
    """Small transformer text encoder.

    forward(ids [B, L]) -> (tokens [B, L, D], pooled [B, D]). Pad positions of
    `tokens` are zero; `pooled` is the final state of the ``[CLS]`` token, so the
    all-pad empty prompt still has a well-defined embedding.
    """

    def __init__(self, config: TextConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.dim)
        self.pos = nn.Parameter(torch.randn(config.max_length, config.dim) * 0.02)
        self.blocks = nn.ModuleList(EncoderBlock(config.dim, config.heads) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.dim)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if ids.ndim != 2 or ids.shape[1] != self.config.max_length:
            raise ValueError(f"ids must be [B, {self.config.max_length}], got {tuple(ids.shape)}")
        keep = ids != 0
        keep[:, 0] = True  # [CLS] always attends, so no row is fully masked
        x = self.embed(ids) + self.pos
        key_mask = keep[:, None, None, :]
        for block in self.blocks:
            x = block(x, key_mask)
        x = self.norm(x)
        return x * keep[..., None].to(x.dtype), x[:, 0]


def encode_prompts(
    tokenizer: Tokenizer, encoder: TextEncoder, prompts: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode prompts on the encoder's device: (tokens [B, L, D], pooled [B, D]).

    The empty prompt ``""`` gives the unconditional embedding used for CFG.
    """
    device = next(encoder.parameters()).device
    return encoder(tokenizer(prompts).to(device))
