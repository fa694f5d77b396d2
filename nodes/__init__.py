"""ComfyUI glue (V3 API). The only part of the pack, with the root __init__, that imports ComfyUI."""

from typing_extensions import override

from comfy_api.latest import ComfyExtension, io

from .latent import FlowMatchEmptyLatent


class FlowMatchExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [FlowMatchEmptyLatent]
