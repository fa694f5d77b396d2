"""Which latents a model takes, and a clear refusal for the ones it does not.

ComfyUI's latent formats (`comfy.latent_formats`) carry channels and dimensions but not
the VAE's scale; the scales below are those of ComfyUI's own empty-latent nodes for each
family (EmptyLTXVLatentVideo, EmptyMochiLatentVideo, EmptyCosmosLatentVideo,
Wan22ImageToVideoLatent, EmptyHunyuanVideo15Latent, EmptyHunyuanImageLatent,
EmptyFlux2LatentImage); every other format is an 8x spatial, 4x temporal VAE (SD3, Flux,
Wan 2.1, HunyuanVideo). A format may also declare `spatial_downscale` itself, as ours does.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .limits import STANDARD_EMPTY_LATENT_DOWNSCALE, WorkLimitError, flowmatch_config, geometry_text


class LatentGeometry(NamedTuple):
    channels: int
    dimensions: int  # 2: [B, C, H, W] images; 3: [B, C, T, H, W] video
    spatial: int  # pixels per latent cell along height and width
    temporal: int  # video frames per latent frame after the first


# latent format class name -> (spatial, temporal) downscale; looked up along the class's MRO.
DOWNSCALE_BY_FORMAT = {
    "ChromaRadiance": (1, 1),
    "Wan22": (16, 4),
    "LTXV": (32, 8),
    "Mochi": (8, 6),
    "Cosmos1CV8x8x8": (8, 8),
    "HunyuanVideo15": (16, 4),
    "HunyuanImage21": (32, 1),
    "Flux2": (16, 1),
}
DEFAULT_DOWNSCALE = (8, 4)


def model_name(model) -> str:
    name = type(model.model).__name__
    return "FlowMatch" if name == "FlowMatchComfyModel" else name


def latent_geometry(latent_format) -> LatentGeometry:
    """Channels, dimensions and VAE scale of a ComfyUI latent format object."""
    spatial, temporal = next(
        (DOWNSCALE_BY_FORMAT[c.__name__] for c in type(latent_format).__mro__ if c.__name__ in DOWNSCALE_BY_FORMAT),
        DEFAULT_DOWNSCALE,
    )
    spatial = getattr(latent_format, "spatial_downscale", spatial)
    return LatentGeometry(latent_format.latent_channels, latent_format.latent_dimensions, spatial, temporal)


def model_geometry(model) -> LatentGeometry:
    return latent_geometry(model.get_model_object("latent_format"))


def fit_problem(node: str, model, samples: torch.Tensor, check_empty: bool = True) -> str | None:
    """Why `samples` cannot be sampled by `model` (None when it can).

    An all-zero latent with other channels is what Empty Latent Image gives; ComfyUI
    reshapes it to the model's channels, which is right only for 8x models. For any
    other scale it would silently give an image of the wrong size, so it is refused.
    `check_empty=False` skips that test (the latent was already reshaped)."""
    if samples.is_nested:  # several latents in one (ComfyUI's multi-part models): left to the model
        return None
    want = model_geometry(model)
    name = model_name(model)
    if want.dimensions not in (2, 3):
        return f"{node}: {name} takes {want.dimensions}-D latents (audio or 3-D), not images or video."
    takes = f"{name} takes {want.channels}-channel latents at {want.spatial}x scale"
    if samples.ndim not in (4, 5) or (samples.ndim == 5 and want.dimensions == 2):
        kind = "video (5-D)" if samples.ndim == 5 else f"{samples.ndim}-D"
        return f"{node}: the latent is {kind}, shape {list(samples.shape)}, but {takes} for images [B, C, H, W]."
    if samples.shape[1] != want.channels:
        found = f"the latent has {geometry_text(samples.shape)}"
        if check_empty and not torch.count_nonzero(samples):
            if want.spatial == STANDARD_EMPTY_LATENT_DOWNSCALE:
                return None
            asked = "x".join(str(n * STANDARD_EMPTY_LATENT_DOWNSCALE) for n in samples.shape[-2:])
            got = "x".join(str(n * want.spatial) for n in samples.shape[-2:])
            return (
                f"{node}: {found} (an empty latent for 8x-scale models, e.g. from Empty Latent Image) but {takes}: "
                f"it would give a {got} image instead of {asked}. Use Flow Match Empty Latent with this model."
            )
        return (
            f"{node}: {found} but {takes}. It was made for another model (its VAE or empty-latent node); "
            "encode the image with this model's VAE or use Flow Match Empty Latent with this model."
        )
    config = flowmatch_config(model)
    if config is not None and (samples.shape[-1] % config.patch or samples.shape[-2] % config.patch):
        return (
            f"{node}: the latent is {'x'.join(str(n) for n in samples.shape[-2:])}, but this FlowMatch model "
            f"needs sides that are multiples of its patch size {config.patch}. Resize to a multiple of {config.patch}."
        )
    return None


def require_latent_fits(node: str, model, samples: torch.Tensor, check_empty: bool = True) -> None:
    problem = fit_problem(node, model, samples, check_empty)
    if problem:
        raise WorkLimitError(problem)
