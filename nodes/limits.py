"""Work limits: absurd requests are refused before any work, with the limit and how to lift it.

- schedule length `steps / denoise`: 10,000 (`FLOWMATCH_MAX_SCHEDULE_STEPS`);
- FlowMatch models, tokens per image in one call: 64 x the model's native tokens
  (`FLOWMATCH_MAX_TOKENS`); tokens of a whole latent batch: 65,536 (`FLOWMATCH_MAX_BATCH_TOKENS`);
- native models, one call on the whole batch by ComfyUI's own estimate (`memory_required`), and
  any empty latent's bytes: the free memory ComfyUI reports (`FLOWMATCH_MEMORY_CHECK=off`).

The environment is read at each check. The table of limits and refusals is in
docs/reliability.md; latents that do not fit the model are `latent_fit`'s job.
"""

from __future__ import annotations

import math
import os

import comfy.model_management

from ..models.dit import DiTConfig

SCHEDULE_STEPS_ENV, DEFAULT_MAX_SCHEDULE_STEPS = "FLOWMATCH_MAX_SCHEDULE_STEPS", 10_000
TOKENS_ENV, NATIVE_TOKEN_FACTOR = "FLOWMATCH_MAX_TOKENS", 64
BATCH_TOKENS_ENV, DEFAULT_MAX_BATCH_TOKENS = "FLOWMATCH_MAX_BATCH_TOKENS", 65_536
MEMORY_CHECK_ENV = "FLOWMATCH_MEMORY_CHECK"
STANDARD_EMPTY_LATENT_DOWNSCALE = 8  # what Empty Latent Image / EmptySD3LatentImage assume


class WorkLimitError(ValueError):
    """A request is refused before it runs; the message names the limit and how to lift it."""


def env_limit(name: str, default: int) -> int:
    """The limit from environment variable `name` (a positive integer), else `default`."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(float(raw))
    except ValueError:
        raise WorkLimitError(f"environment variable {name}={raw!r} must be a positive integer") from None
    if value < 1:
        raise WorkLimitError(f"environment variable {name}={raw!r} must be a positive integer")
    return value


def range_problem(node: str, ranges: dict) -> str | None:
    """validate_inputs answer for numbers, `ranges` = {name: (value, low, high)}. ComfyUI skips
    its own min/max check for inputs that validate_inputs takes, and lets NaN through; a
    linked input (None at queue time) is left to execute."""
    for name, (value, low, high) in ranges.items():
        if value is not None and not low <= value <= high:
            return f"{node}: {name} {value!r} must be a number from {low} to {high}"
    return None


def schedule_length_problem(node: str, steps, denoise) -> str | None:
    """Why `steps` at `denoise` needs too long a schedule (None when it fits or is unknown).

    A denoise below 1 runs the last `steps` of a `steps / denoise`-step schedule, so the
    schedule is built (and its sigmas computed) for that many steps."""
    if steps is None or denoise is None:
        return None
    if not 0.0 <= denoise <= 1.0:  # NaN too: only a linked input reaches execute unchecked
        return f"{node}: denoise {denoise!r} must be a number from 0 to 1"
    if denoise in (0.0, 1.0):
        return None
    limit = env_limit(SCHEDULE_STEPS_ENV, DEFAULT_MAX_SCHEDULE_STEPS)
    total = steps / denoise
    if total <= limit:
        return None
    return (
        f"{node}: denoise {denoise:g} with {steps} steps needs a {total:.3g}-step schedule (steps / denoise); "
        f"the limit is {limit}. Use denoise >= {steps / limit:.4g} (or fewer steps), or set "
        f"{SCHEDULE_STEPS_ENV} to lift the limit."
    )


def require_schedule_length(node: str, steps: int, denoise: float) -> None:
    problem = schedule_length_problem(node, steps, denoise)
    if problem:
        raise WorkLimitError(problem)


def geometry_text(shape) -> str:
    """'4 channels, 64x64' or '16 channels, 21 frames, 60x104' for a latent shape."""
    shape = list(shape)
    frames = f", {shape[2]} frames" if len(shape) == 5 else ""
    return f"{shape[1]} channels{frames}, {'x'.join(str(n) for n in shape[-2:])}"


def flowmatch_config(model):
    """Our network's DiTConfig when `model` (a ModelPatcher) wraps a FlowMatch network, else None."""
    config = getattr(getattr(model.model.diffusion_model, "network", None), "config", None)
    return config if isinstance(config, DiTConfig) else None


def token_problem(node: str, config, shape) -> str | None:
    """Why a FlowMatch model call on a latent `shape` [B, C, H, W] holds too many tokens."""
    batch, (height, width) = shape[0], shape[-2:]
    tokens = (height // config.patch) * (width // config.patch)
    native_tokens = (config.image_size // config.patch) ** 2
    per_image = env_limit(TOKENS_ENV, NATIVE_TOKEN_FACTOR * native_tokens)
    if tokens > per_image:
        side = int(math.sqrt(per_image)) * config.patch
        return (
            f"{node}: a {width}x{height} image is {tokens} tokens per model call for this model (native "
            f"{config.image_size}x{config.image_size}, {native_tokens} tokens); the limit is {per_image} tokens "
            f"(about {side}x{side}). Use a smaller size, or set {TOKENS_ENV} to lift the limit."
        )
    per_batch = env_limit(BATCH_TOKENS_ENV, DEFAULT_MAX_BATCH_TOKENS)
    if batch * tokens > per_batch:
        return (
            f"{node}: batch {batch} of {width}x{height} images is {batch * tokens} tokens in one model call; "
            f"the limit is {per_batch}. Use batch_size <= {max(per_batch // tokens, 1)}, or set "
            f"{BATCH_TOKENS_ENV} to lift the limit."
        )
    return None


def memory_check_enabled() -> bool:
    return os.environ.get(MEMORY_CHECK_ENV, "").strip().lower() not in ("off", "0", "false", "no")


def available_memory(device) -> int:
    """Bytes ComfyUI reports free on `device`, plus what the models loaded there would release."""
    loaded = sum(m.model_loaded_memory() for m in comfy.model_management.current_loaded_models if m.device == device)
    return comfy.model_management.get_free_memory(device) + loaded


def gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def memory_problem(node: str, model, shape) -> str | None:
    """Why one model call on the whole latent `shape` cannot fit, by ComfyUI's own estimate."""
    if not memory_check_enabled():
        return None
    needed = model.model.memory_required(list(shape))
    free = available_memory(model.load_device)
    if needed <= free:
        return None
    return (
        f"{node}: a latent of batch {shape[0]}, {geometry_text(shape)} needs about {gib(needed)} per model call "
        f"(ComfyUI's estimate) but {gib(free)} is free on {model.load_device}. Use a smaller size or batch, or "
        f"set {MEMORY_CHECK_ENV}=off to skip this check."
    )


def latent_bytes_problem(node: str, shape, dtype_size: int = 4) -> str | None:
    """Why an empty latent of `shape` cannot be allocated on ComfyUI's intermediate device."""
    if not memory_check_enabled():
        return None
    needed = math.prod(shape) * dtype_size
    device = comfy.model_management.intermediate_device()
    free = comfy.model_management.get_free_memory(device)
    if needed <= free:
        return None
    return (
        f"{node}: a latent of batch {shape[0]}, {geometry_text(shape)} takes {gib(needed)} but {gib(free)} is "
        f"free on {device}. Use a smaller size or batch, or set {MEMORY_CHECK_ENV}=off to skip this check."
    )


def require_affordable_work(node: str, model, shape) -> None:
    """Refuse one model call on latent `shape` [B, C, (T,) H, W] that is over a limit."""
    config = flowmatch_config(model)
    problem = token_problem(node, config, shape) if config is not None else memory_problem(node, model, shape)
    if problem:
        raise WorkLimitError(problem)
