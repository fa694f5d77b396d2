"""ComfyUI glue (V3 API). The only part of the pack, with the root __init__, that imports ComfyUI."""

from typing_extensions import override

from comfy_api.latest import ComfyExtension, io

from .conditioning import FlowMatchTextEncode
from .editing import FlowMatchEdit, FlowMatchInvert
from .guidance_interval import FlowMatchGuidanceInterval
from .latent import FlowMatchEmptyLatent
from .likelihood import FlowMatchLikelihood
from .loader import FlowMatchModelLoader
from .model_files import register_folder
from .optimal_schedule import FlowMatchOptimalSchedule
from .sampling import FlowMatchODESampler, FlowMatchSampler, FlowMatchScheduler
from .trajectory import FlowMatchTrajectory

register_folder()


class FlowMatchExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [
            FlowMatchModelLoader,
            FlowMatchTextEncode,
            FlowMatchEmptyLatent,
            FlowMatchSampler,
            FlowMatchODESampler,
            FlowMatchScheduler,
            FlowMatchGuidanceInterval,
            FlowMatchInvert,
            FlowMatchEdit,
            FlowMatchOptimalSchedule,
            FlowMatchTrajectory,
            FlowMatchLikelihood,
        ]
