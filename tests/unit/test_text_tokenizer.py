"""Tokenizer edge cases and the text encoder's contract."""

import warnings

import pytest
import torch

from comfyui_flowmatch.models.data import all_captions
from comfyui_flowmatch.models.text import TextConfig, TextEncoder, Tokenizer, encode_prompts

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_captions(all_captions(), max_length=16)


@pytest.fixture(scope="module")
def encoder(tokenizer) -> TextEncoder:
    torch.manual_seed(0)
    return TextEncoder(TextConfig(vocab_size=len(tokenizer.vocab), dim=16, depth=1, heads=2)).eval()


def encode_quietly(tokenizer, prompt):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids, problems = tokenizer.encode(prompt)
    return ids, problems, [str(w.message) for w in caught]


def test_known_caption_has_no_problems(tokenizer):
    ids, problems, caught = encode_quietly(tokenizer, "a red circle on a black background in the top left")
    assert len(ids) == 16 and problems == [] and caught == []
    assert ids[0] == tokenizer.vocab.index("[CLS]") and 1 not in ids  # no [UNK]


def test_empty_prompt_is_cls_then_pads(tokenizer):
    ids, problems, _ = encode_quietly(tokenizer, "")
    assert ids == [tokenizer.vocab.index("[CLS]")] + [0] * 15 and problems == []


def test_case_and_punctuation_are_ignored(tokenizer):
    assert encode_quietly(tokenizer, "A RED circle, on a black background.")[0] == \
        encode_quietly(tokenizer, "a red circle on a black background")[0]


def test_unknown_words_are_mapped_and_named(tokenizer):
    ids, problems, caught = encode_quietly(tokenizer, "a magenta hexagon on a black background")
    assert ids.count(tokenizer.vocab.index("[UNK]")) == 2
    assert "'magenta'" in problems[0] and "'hexagon'" in problems[0]
    assert any("magenta" in message for message in caught)


def test_ten_thousand_character_prompt_is_truncated(tokenizer):
    prompt = ("red " * 2500)[:10_000]
    ids, problems, caught = encode_quietly(tokenizer, prompt)
    assert len(ids) == 16 and 0 not in ids
    assert any("truncated to 15 words" in p and "dropped 2485" in p for p in problems) and caught


@pytest.mark.parametrize("prompt", ["a red 🔴 circle", "a red\x00circle", "\x00", "🟥🟥", "\u200b\t\n"])
def test_emoji_nul_and_odd_characters_never_crash(tokenizer, encoder, prompt):
    ids, problems, _ = encode_quietly(tokenizer, prompt)
    assert len(ids) == 16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokens, pooled = encode_prompts(tokenizer, encoder, [prompt])
    assert torch.isfinite(tokens).all() and torch.isfinite(pooled).all()


def test_nul_is_reported(tokenizer):
    _, problems, _ = encode_quietly(tokenizer, "a red\x00circle")
    assert problems and "'\\x00'" in problems[0]


def test_encoder_shapes_and_zero_pads(tokenizer, encoder):
    tokens, pooled = encode_prompts(tokenizer, encoder, ["a red circle on a black background", ""])
    assert tokens.shape == (2, 16, 16) and pooled.shape == (2, 16)
    n_words = 8
    assert tokens[0, n_words:].abs().max() == 0 and tokens[0, :n_words].abs().min() > 0
    assert tokens[1, 1:].abs().max() == 0 and torch.isfinite(pooled[1]).all()


def test_pads_do_not_change_the_encoding(tokenizer):
    """The encoder masks pads: a prompt encodes the same whatever max_length pads it."""
    short = Tokenizer(tokenizer.vocab, max_length=12)
    torch.manual_seed(0)
    enc16 = TextEncoder(TextConfig(vocab_size=len(tokenizer.vocab), dim=16, depth=1, heads=2, max_length=16))
    enc12 = TextEncoder(TextConfig(vocab_size=len(tokenizer.vocab), dim=16, depth=1, heads=2, max_length=12))
    enc12.load_state_dict({k: (v[:12] if k == "pos" else v) for k, v in enc16.state_dict().items()})
    t16, p16 = encode_prompts(tokenizer, enc16.eval(), ["a blue square"])
    t12, p12 = encode_prompts(short, enc12.eval(), ["a blue square"])
    assert torch.allclose(p16, p12, atol=1e-5) and torch.allclose(t16[:, :12], t12, atol=1e-5)


def test_vocab_validation():
    with pytest.raises(ValueError, match="must start with"):
        Tokenizer(vocab=("red", "[PAD]", "[UNK]", "[CLS]"))
    with pytest.raises(ValueError, match="max_length must be >= 2, got 1"):
        Tokenizer(vocab=("[PAD]", "[UNK]", "[CLS]"), max_length=1)
