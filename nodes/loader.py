"""FlowMatchModelLoader: our checkpoints and native flow-matching checkpoints -> MODEL, CLIP, VAE."""

from __future__ import annotations

import os

import comfy.model_management
import comfy.model_sampling
import comfy.sd
import folder_paths
from comfy_api.latest import io

from ..models.checkpoint import FORMAT_NAME, CheckpointError, load_checkpoint, read_header
from .comfy_model import pixel_space_vae, wrap_network
from .model_files import checkpoint_names, resolve_checkpoint
from .text_clip import build_clip

FULL_CHECKPOINT_PREFIX = "model.diffusion_model."


def load_ours(path: str):
    """(MODEL, CLIP, VAE) for a FlowMatch checkpoint: our network, encoder and a pixel VAE."""
    try:
        bundle = load_checkpoint(path, comfy.model_management.unet_offload_device())
    except CheckpointError as error:
        raise ValueError(f"FlowMatchModelLoader: {error}") from None
    return wrap_network(bundle.dit), build_clip(bundle.tokenizer, bundle.text_encoder), pixel_space_vae()


def load_native(path: str, header: dict):
    """(MODEL, CLIP or None, VAE or None) through ComfyUI's own loaders. A full checkpoint
    (keys under `model.diffusion_model.`) gives whatever parts it holds; a diffusion-only
    file (most SD3/Flux/Wan downloads) gives MODEL only."""
    name = os.path.basename(path)
    try:
        if any(key.startswith(FULL_CHECKPOINT_PREFIX) for key in header):
            model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(
                path, output_vae=True, output_clip=True,
                embedding_directory=folder_paths.get_folder_paths("embeddings"),
            )
        else:
            model, clip, vae = comfy.sd.load_diffusion_model(path), None, None
    except RuntimeError as error:
        if "Could not detect model type" not in str(error):
            raise
        raise ValueError(
            f"FlowMatchModelLoader: ComfyUI does not recognise {name} as a diffusion model it supports; "
            "check that the file is a complete SD3 / Flux / AuraFlow / Wan ... checkpoint."
        ) from None
    require_flow_model(model, name)
    return model, clip, vae


def require_flow_model(model, name: str) -> None:
    """Refuse models that are not flow matching (CONST prediction), naming what they are."""
    if isinstance(model.get_model_object("model_sampling"), comfy.model_sampling.CONST):
        return
    base_model = model.model
    raise ValueError(
        f"FlowMatchModelLoader: {name} is a {type(base_model).__name__} model with "
        f"{base_model.model_type.name} prediction, not a flow-matching model. "
        "Load it with Load Checkpoint and sample it with KSampler."
    )


def load_any(name: str):
    """Resolve, check and load `name` from the listed model folders (model_files)."""
    path = resolve_checkpoint(name)
    try:
        header = read_header(path)  # refuses pickles, truncated and malformed files by their bytes
    except CheckpointError as error:
        raise ValueError(f"FlowMatchModelLoader: {error}") from None
    if (header.get("__metadata__") or {}).get("format") == FORMAT_NAME:
        return load_ours(path)  # a damaged file of ours gets models.checkpoint's specific error
    return load_native(path, header)


class FlowMatchModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlowMatchModelLoader",
            display_name="Flow Match Model Loader",
            category="flow_matching/loaders",
            description=(
                "Loads a flow-matching checkpoint from models/flow_matching (or the bundled model), models/diffusion_models "
                "(models/unet) or models/checkpoints, plus their extra_model_paths.yaml folders. "
                "The bundled FlowMatch model gives MODEL, CLIP and a pixel-space VAE that work with the native "
                "CLIP Text Encode, VAE Decode and VAE Encode nodes. Native SD3/SD3.5, Flux, AuraFlow, Wan ... files "
                "load through ComfyUI's own code: a full checkpoint gives the parts it contains, a diffusion-only "
                "file gives MODEL only (CLIP and VAE are empty: load them with the native CLIP/VAE loaders). "
                "Models that are not flow matching (e.g. SD1.5) are refused. Only .safetensors files are read."
            ),
            inputs=[
                io.Combo.Input(
                    "ckpt_name", options=checkpoint_names(),
                    tooltip=(
                        "A .safetensors file in models/flow_matching, models/diffusion_models or models/checkpoints, "
                        "or the bundled flowmatch_shapes model."
                    ),
                ),
            ],
            outputs=[
                io.Model.Output(tooltip="The diffusion model, wrapped for ComfyUI's samplers and model management."),
                io.Clip.Output(tooltip="The text encoder (empty for diffusion-only native files)."),
                io.Vae.Output(tooltip="The VAE: pixel space for FlowMatch models (empty for diffusion-only native files)."),
            ],
        )

    @classmethod
    def validate_inputs(cls, ckpt_name):
        if ckpt_name is None:  # linked input: ComfyUI passes no value at queue time; execute checks it
            return True
        try:
            resolve_checkpoint(ckpt_name)
        except ValueError as error:
            return str(error)
        return True

    @classmethod
    def execute(cls, ckpt_name) -> io.NodeOutput:
        return io.NodeOutput(*load_any(ckpt_name))

