"""FlowMatchEmptyLatent: an empty latent shaped for the model that will sample it."""

import torch

import comfy.model_management
from comfy_api.latest import io

# Native flow models (SD3, Flux, Wan...) use VAEs that downscale 8x; our model is pixel space.
DEFAULT_SPATIAL_DOWNSCALE = 8


def empty_latent_shape(latent_format, width: int, height: int, batch_size: int, length: int = 1) -> list[int]:
    """[B, C, H, W] (or [B, C, T, H, W] for video formats) zeros shape for `latent_format`."""
    scale = getattr(latent_format, "spatial_downscale", DEFAULT_SPATIAL_DOWNSCALE)
    shape = [batch_size, latent_format.latent_channels, height // scale, width // scale]
    if getattr(latent_format, "latent_dimensions", 2) == 3:
        shape.insert(2, (length - 1) // 4 + 1)
    return shape


class FlowMatchEmptyLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlowMatchEmptyLatent",
            display_name="Flow Match Empty Latent",
            category="flow_matching/latent",
            description="An empty latent with the channels and scale of the given model "
            "(pixel space for the bundled model, 8x-downscaled latents for SD3/Flux/Wan, 5-D video latents for Wan).",
            inputs=[
                io.Model.Input("model", tooltip="The model that will sample this latent; it fixes channels and scale."),
                io.Int.Input("width", default=32, min=8, max=8192, step=8, tooltip="Image width in pixels."),
                io.Int.Input("height", default=32, min=8, max=8192, step=8, tooltip="Image height in pixels."),
                io.Int.Input("batch_size", default=1, min=1, max=4096, tooltip="Number of images in the batch."),
                io.Int.Input("length", default=1, min=1, max=8192, step=4, optional=True,
                             tooltip="Video frames, for video models such as Wan (4 frames per latent frame, plus "
                             "the first); ignored by image models."),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(cls, model, width, height, batch_size, length=1) -> io.NodeOutput:
        latent_format = model.get_model_object("latent_format")
        shape = empty_latent_shape(latent_format, width, height, batch_size, length)
        samples = torch.zeros(shape, device=comfy.model_management.intermediate_device())
        return io.NodeOutput({"samples": samples})
