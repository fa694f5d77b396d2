"""FlowMatchEmptyLatent: an empty latent shaped for the model that will sample it."""

import torch

import comfy.model_management
from comfy_api.latest import io

from .latent_fit import LatentGeometry, model_geometry
from .limits import WorkLimitError, latent_bytes_problem, require_affordable_work

NODE = "FlowMatchEmptyLatent"


def empty_latent_shape(geometry: LatentGeometry, width: int, height: int, batch_size: int,
                       length: int = 1) -> list[int]:
    """[B, C, H, W] (or [B, C, T, H, W] for video) zeros shape: sides divided by the VAE's
    spatial scale, frames (first + one per `temporal` more) as ComfyUI's empty-latent nodes do.

    Raises:
        WorkLimitError: 1-D (audio, 3-D) formats, or a side below the spatial scale.
    """
    if geometry.dimensions not in (2, 3):
        raise WorkLimitError(f"{NODE}: the model takes {geometry.dimensions}-D latents, not images or video")
    if min(width, height) < geometry.spatial:
        raise WorkLimitError(
            f"{NODE}: {width}x{height} is smaller than one latent cell of this model ({geometry.spatial}x"
            f"{geometry.spatial} pixels); use width and height >= {geometry.spatial}"
        )
    shape = [batch_size, geometry.channels, height // geometry.spatial, width // geometry.spatial]
    if geometry.dimensions == 3:
        shape.insert(2, (length - 1) // geometry.temporal + 1)
    return shape


class FlowMatchEmptyLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FlowMatchEmptyLatent",
            display_name="Flow Match Empty Latent",
            category="flow_matching/latent",
            description="An empty latent with the channels and scale of the given model's own latent format "
            "(pixel space for the bundled model, 8x for SD3/Flux/Wan 2.1, 16x for Wan 2.2, 32x for LTXV; 5-D video "
            "latents with the model's frame scale). Sizes the model cannot sample in one call are refused here, "
            "naming the limit and how to lift it.",
            inputs=[
                io.Model.Input("model", tooltip="The model that will sample this latent; it fixes channels and scale."),
                io.Int.Input("width", default=32, min=8, max=8192, step=8, tooltip="Image width in pixels."),
                io.Int.Input("height", default=32, min=8, max=8192, step=8, tooltip="Image height in pixels."),
                io.Int.Input("batch_size", default=1, min=1, max=4096, tooltip="Number of images in the batch."),
                io.Int.Input("length", default=1, min=1, max=8192, step=4, optional=True,
                             tooltip="Video frames, for video models: the first frame plus one latent frame per 4 "
                             "(Wan, Hunyuan), 6 (Mochi) or 8 (LTXV, Cosmos) frames; ignored by image models."),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def execute(cls, model, width, height, batch_size, length=1) -> io.NodeOutput:
        shape = empty_latent_shape(model_geometry(model), width, height, batch_size, length)
        problem = latent_bytes_problem(NODE, shape)
        if problem:
            raise WorkLimitError(problem)
        require_affordable_work(NODE, model, shape)
        samples = torch.zeros(shape, device=comfy.model_management.intermediate_device())
        return io.NodeOutput({"samples": samples})
