"""Our tokenizer + text encoder as a real `comfy.sd.CLIP`, so native `CLIPTextEncode` works.

`comfy.sd.CLIP` builds `target.clip(**target.params, dtype=, device=, model_options=)` and
`target.tokenizer(embedding_directory=, tokenizer_data=)`, wraps the encoder in a
ModelPatcher (model management loads and offloads it) and calls
`tokenize_with_weights(text)` / `encode_token_weights(tokens)`. Building a CLIP this way,
rather than a look-alike object, keeps clone(), hooks, LoRA patch plumbing and
`encode_from_tokens_scheduled` exactly ComfyUI's.

Tokens: our encoder has its own fixed-length tokenizer, so the "tokens" ComfyUI carries
between tokenize and encode are just the prompt texts (prompt weights are not supported).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import torch

import comfy.model_management
import comfy.sd

from ..models.text import encode_prompts
from .comfy_model import compute_dtype

TOKENS_KEY = "flowmatch"


class FlowMatchClipTokenizer:
    """ComfyUI-side tokenizer: keeps the text, logs words our vocabulary lacks or drops."""

    def __init__(self, tokenizer, embedding_directory=None, tokenizer_data={}):
        self.tokenizer = tokenizer

    def tokenize_with_weights(self, text: str, return_word_ids: bool = False, **kwargs) -> dict:
        for warning in prompt_warnings(self.tokenizer, text):
            logging.warning("FlowMatch text encoder: %s", warning)
        return {TOKENS_KEY: [text]}

    def state_dict(self):
        return {}


class FlowMatchClipModel(torch.nn.Module):
    """ComfyUI-side text encoder: texts -> (cond [B,L,D], pooled [B,D]) on the intermediate device."""

    def __init__(self, tokenizer, encoder, dtype=None, device=None, model_options={}):
        super().__init__()
        self.tokenizer = tokenizer
        self.encoder = encoder.to(device=device, dtype=dtype)
        self.dtypes = {dtype}

    def set_clip_options(self, options):
        if "layer" in options:
            logging.debug("FlowMatch text encoder has no CLIP layers; ignoring clip skip %s", options["layer"])

    def reset_clip_options(self):
        pass

    def encode_token_weights(self, tokens: dict):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tokenizer step already logged them
            cond, pooled = encode_prompts(self.tokenizer, self.encoder, tokens[TOKENS_KEY])
        out_device = comfy.model_management.intermediate_device()
        return cond.to(out_device, torch.float32), pooled.to(out_device, torch.float32)


@dataclass
class _ClipTarget:
    """What `comfy.sd.CLIP(target=...)` reads: `.params`, `.clip`, `.tokenizer`."""

    tokenizer_obj: object
    encoder: torch.nn.Module
    params: dict = field(init=False)

    def __post_init__(self):
        self.params = {"tokenizer": self.tokenizer_obj, "encoder": self.encoder}

    def clip(self, **params):
        return FlowMatchClipModel(**params)

    def tokenizer(self, **kwargs):
        return FlowMatchClipTokenizer(self.tokenizer_obj, **kwargs)


def prompt_warnings(tokenizer, text: str) -> list[str]:
    """Human-readable notes on unknown and truncated words in `text` (models.text's own wording)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tokenizer.encode(text)[1]


def build_clip(tokenizer, encoder: torch.nn.Module) -> comfy.sd.CLIP:
    """A CLIP for native text nodes, on ComfyUI's text-encoder device and dtype (the compute
    dtype: ComfyUI stores CPU text encoders in fp16 but computes in fp32)."""
    parameters = sum(p.numel() for p in encoder.parameters())
    device = comfy.model_management.text_encoder_device()
    dtype = compute_dtype(comfy.model_management.text_encoder_dtype(device), device)
    return comfy.sd.CLIP(target=_ClipTarget(tokenizer, encoder), parameters=parameters, model_options={"dtype": dtype})
