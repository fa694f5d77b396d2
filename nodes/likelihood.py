"""FlowMatchLikelihood: bits per dimension of images under a FlowMatch checkpoint's flow."""

from __future__ import annotations

import math

import comfy.model_management
import torch
from comfy_api.latest import io, ui

from ..models.dit import FlowDiT
from ..samplers.likelihood import DIVERGENCES, bits_per_dim, log_likelihood
from .comfy_model import ComfyVelocityNet

NODE = "FlowMatchLikelihood"
MAX_EXACT_DIMS = 1024  # the exact divergence costs one backward pass per dimension and velocity call


def trainable_copy(model) -> FlowDiT:
    """An fp32 copy of the MODEL's network outside inference mode (ComfyUI runs nodes under
    `torch.inference_mode`, whose tensors cannot take part in autograd)."""
    wrapper = getattr(model.model, "diffusion_model", None)
    if not isinstance(wrapper, ComfyVelocityNet) or not isinstance(wrapper.network, FlowDiT):
        raise ValueError(f"{NODE}: model must come from Flow Match Model Loader with a FlowMatch checkpoint "
                         "(the likelihood needs the network's gradients; native SD3/Flux models are not supported).")
    with torch.inference_mode(False):
        copy = FlowDiT(wrapper.network.config)
        copy.load_state_dict({k: v.detach().clone().float() for k, v in wrapper.network.state_dict().items()})
    return copy.eval()


def text_condition(conditioning, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(context [batch, L, D], pooled [batch, D]) from the first entry of a CONDITIONING."""
    if not conditioning:
        raise ValueError(f"{NODE}: the conditioning is empty; connect Flow Match Text Encode.")
    context, extra = conditioning[0][0], conditioning[0][1]
    pooled = extra.get("pooled_output")
    if pooled is None:
        raise ValueError(f"{NODE}: the conditioning has no pooled_output; encode the prompt with the CLIP of "
                         "Flow Match Model Loader.")
    with torch.inference_mode(False):
        context = context[:1].detach().clone().float().expand(batch, -1, -1)
        pooled = pooled[:1].detach().clone().float().expand(batch, -1)
    return context, pooled


class FlowMatchLikelihood(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=NODE,
            display_name="Flow Match Likelihood",
            category="flow_matching/diagnostics",
            description=(
                "How likely each image is under the model (exact log-likelihood of the flow by the instantaneous "
                "change of variables), in bits per dimension: lower = more typical of what the model learned."
            ),
            inputs=[
                io.Model.Input("model", tooltip="A model from Flow Match Model Loader (a FlowMatch checkpoint)."),
                io.Conditioning.Input("conditioning", tooltip="The prompt to condition on; an empty prompt scores "
                                      "the model's unconditional image density."),
                io.Image.Input("image", tooltip="Images at the model's size (32x32 for the bundled models)."),
                io.Int.Input("steps", default=32, min=1, max=1000,
                             tooltip="Midpoint steps of the ODE from the image to noise (more = more accurate, slower)."),
                io.Combo.Input("divergence", options=list(DIVERGENCES), default="hutchinson",
                               tooltip="exact: one backward pass per pixel value (small images only); hutchinson: an "
                                       "unbiased random estimate with its standard error shown."),
                io.Int.Input("probes", default=4, min=2, max=64,
                             tooltip="Random probes per image for hutchinson (more = smaller error, slower)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, tooltip="Seed of the Hutchinson probes."),
            ],
            outputs=[io.Float.Output(display_name="bits_per_dim", tooltip="Mean bits per dimension over the images.")],
        )

    @classmethod
    def validate_inputs(cls, divergence):
        if divergence is None or divergence in DIVERGENCES:
            return True
        return f"{NODE}: divergence {divergence!r} is not one of {list(DIVERGENCES)}"

    @classmethod
    def execute(cls, model, conditioning, image, steps, divergence, probes, seed) -> io.NodeOutput:
        network = trainable_copy(model)
        size = network.config.image_size
        if image.shape[1] % network.config.patch or image.shape[2] % network.config.patch:
            raise ValueError(f"{NODE}: image is {image.shape[2]}x{image.shape[1]}; its sides must be multiples of "
                             f"{network.config.patch} (the model's native size is {size}x{size}).")
        dims = math.prod(image.shape[1:])
        if divergence == "exact" and dims > MAX_EXACT_DIMS:
            raise ValueError(f"{NODE}: exact divergence needs one backward pass per value ({dims} per image, limit "
                             f"{MAX_EXACT_DIMS}); use hutchinson.")
        device = comfy.model_management.get_torch_device()
        network = network.to(device)
        copies = probes if divergence == "hutchinson" else 1
        context, pooled = (c.to(device) for c in text_condition(conditioning, image.shape[0] * copies))

        def velocity(x, t):
            comfy.model_management.throw_exception_if_processing_interrupted()
            return network(x, t, context, pooled)

        with torch.inference_mode(False):
            x1 = image.detach().clone().float().movedim(-1, 1).to(device) * 2 - 1
            result = log_likelihood(velocity, x1, steps=steps, method="midpoint", divergence=divergence,
                                    probes=probes, generator=torch.Generator().manual_seed(seed))
        bpd = bits_per_dim(result.log_p, result.dims)
        error = result.std_error / (result.dims * math.log(2))
        lines = [f"image {i + 1}: {b:.3f} bits/dim" + (f" ± {e:.3f}" if divergence == "hutchinson" else "")
                 for i, (b, e) in enumerate(zip(bpd.tolist(), error.tolist()))]
        return io.NodeOutput(float(bpd.mean()), ui=ui.PreviewText("\n".join(lines)))
