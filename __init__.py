"""comfyui-flowmatch: flow-matching (rectified-flow) generation for ComfyUI.

Importing this package never imports ComfyUI: `comfyui_flowmatch.samplers` and
`comfyui_flowmatch.models` are plain torch. ComfyUI calls `comfy_entrypoint()`
when it loads the pack from `custom_nodes/`; only then are the nodes imported.
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    """ComfyUI's V3 entry point: returns the extension that lists our nodes."""
    from .nodes import FlowMatchExtension

    return FlowMatchExtension()
