"""Our network as a ComfyUI flow model: latent format, model config, BaseModel, ModelPatcher.

ComfyUI drives a flow model with sigma (1 = noise, 0 = data) and expects the velocity
`noise - data`; our network takes seed time t (0 = noise, 1 = data) and returns
`data - noise`. `samplers.conventions` converts; nothing here re-derives it.

Timesteps: ComfyUI passes the network `model_sampling.timestep(sigma)`, whose multiplier
depends on the model-sampling object in force (ours: 1.0, `ModelSamplingSD3`: 1000,
`ModelSamplingAuraFlow`: 1.0). `FlowMatchComfyModel.process_timestep` turns it back into
sigma with the object in force, so the shift nodes keep working.
"""

from __future__ import annotations

import torch

import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.supported_models_base

from ..samplers import conventions
from .limits import WorkLimitError, token_problem


class FlowMatchLatentFormat(comfy.latent_formats.LatentFormat):
    """Pixel space: the latent is the RGB image in [-1, 1], so previews are the identity."""

    latent_channels = 3
    latent_dimensions = 2
    scale_factor = 1.0
    spatial_downscale = 1

    def __init__(self):
        self.latent_rgb_factors = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
        self.latent_rgb_factors_bias = None

    def process_in(self, latent):
        return latent

    def process_out(self, latent):
        return latent


class FlowMatchModelConfig(comfy.supported_models_base.BASE):
    """ComfyUI's view of our model: FLOW (CONST) sampling, shift 1, timestep = sigma."""

    unet_config = {}
    unet_extra_config = {}
    sampling_settings = {"shift": 1.0, "multiplier": 1.0}
    latent_format = FlowMatchLatentFormat
    supported_inference_dtypes = [torch.bfloat16, torch.float16, torch.float32]
    memory_usage_factor = 0.5


def sigma_from_timestep(model_sampling, timestep: torch.Tensor) -> torch.Tensor:
    """Undo `model_sampling.timestep(sigma)`: discrete-flow objects multiply by
    `multiplier` (1000 after ModelSamplingSD3, 1.0 after ModelSamplingAuraFlow);
    ModelSamplingFlux has no multiplier and passes sigma through."""
    return timestep / getattr(model_sampling, "multiplier", 1.0)


class ComfyVelocityNet(torch.nn.Module):
    """Wraps a seed-convention network (t, data - noise) for ComfyUI (sigma, noise - data).

    forward(x [B,3,H,W], timesteps = sigma [B], context [B,L,D], y = pooled [B,D]).
    """

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network

    @property
    def dtype(self) -> torch.dtype:
        return next(self.network.parameters()).dtype

    def forward(self, x, timesteps, context=None, y=None, control=None, transformer_options={}, **kwargs):
        if context is None or y is None:
            raise ValueError(
                "FlowMatch model: the conditioning lacks the text tokens or pooled_output; encode prompts with "
                "Flow Match Text Encode or CLIP Text Encode using the CLIP from Flow Match Model Loader."
            )
        config = self.network.config
        problem = token_problem("FlowMatch model", config, (1, 1, *x.shape[-2:]))
        if x.ndim != 4 or x.shape[1] != config.channels:
            problem = (f"FlowMatch model: the latent has shape {list(x.shape)} but the model takes "
                       f"[B, {config.channels}, H, W] pixel-space images; use Flow Match Empty Latent with this model")
        if problem:  # per image: any sampler (KSampler too) stops here before the attention is built
            raise WorkLimitError(problem)
        t = conventions.t_from_sigma(timesteps.float())  # float32: bf16 would round t
        velocity = self.network(x, t, context, y)
        return conventions.comfy_from_velocity(velocity)


class FlowMatchComfyModel(comfy.model_base.BaseModel):
    """BaseModel for our network: pooled text goes to the network as `y` (as SD3 does)."""

    def __init__(self, model_config, network: torch.nn.Module, device=None):
        super().__init__(model_config, comfy.model_base.ModelType.FLOW, device=device)
        self.diffusion_model = ComfyVelocityNet(network)

    def encode_adm(self, **kwargs):
        return kwargs.get("pooled_output")

    def process_timestep(self, timestep, **kwargs):
        return sigma_from_timestep(self.model_sampling, timestep)


def compute_dtype(weight_dtype: torch.dtype, device) -> torch.dtype:
    """Our layers are plain torch (no manual cast: they compute in their weight dtype), so a
    dtype model management picked for storage only (fp16 on a CPU, fp8) becomes the dtype
    ComfyUI would compute in."""
    supported = FlowMatchModelConfig.supported_inference_dtypes
    return comfy.model_management.unet_manual_cast(weight_dtype, device, supported) or weight_dtype


def inference_dtype(parameter_count: int, load_device) -> torch.dtype:
    """The diffusion model's dtype from ComfyUI's model management (honours --fp32-unet and the like)."""
    supported = FlowMatchModelConfig.supported_inference_dtypes
    dtype = comfy.model_management.unet_dtype(load_device, model_params=parameter_count, supported_dtypes=supported)
    return compute_dtype(dtype, load_device)


def wrap_network(network: torch.nn.Module) -> comfy.model_patcher.ModelPatcher:
    """Our network as a MODEL: a FlowMatchComfyModel in a ModelPatcher, so ComfyUI loads it
    to the compute device for sampling and offloads it afterwards."""
    load_device = comfy.model_management.get_torch_device()
    offload_device = comfy.model_management.unet_offload_device()
    dtype = inference_dtype(sum(p.numel() for p in network.parameters()), load_device)
    config = FlowMatchModelConfig({"disable_unet_model_creation": True})  # the network already exists
    config.set_inference_dtype(dtype, None)
    network = network.to(device=offload_device, dtype=dtype).eval()
    model = FlowMatchComfyModel(config, network, device=offload_device)
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)


def pixel_space_vae() -> comfy.sd.VAE:
    """ComfyUI's own pixel-space VAE (the one Chroma Radiance uses): encode maps an image
    in [0, 1] to 2·img − 1, decode maps back and clamps, exactly our model space."""
    return comfy.sd.VAE(sd={"pixel_space_vae": torch.tensor(1.0)})
