"""Test-only ComfyUI nodes for the batch client's fault tests (never shipped).

- FMTestNoiseImage: a random image, so its PNG does not compress (a big file to write).
- FMTestSaveNamed: saves an image under exactly the given file name (``x.json`` included)
  and reports it in the ``images`` UI output, as a careless or hostile save node could.
- An on-prompt handler makes POST /prompt fail inside ComfyUI with its own 500 answer for
  prompts holding a node titled ``fault: 500 on POST /prompt``.
"""

import os

import numpy as np
import torch
from PIL import Image

import folder_paths
from server import PromptServer

FAULT_500_TITLE = "fault: 500 on POST /prompt"


class FMTestNoiseImage:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"size": ("INT", {"default": 256, "min": 8, "max": 4096}),
                             "seed": ("INT", {"default": 0, "min": 0, "max": 2**32 - 1})}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "make"
    CATEGORY = "testing"

    def make(self, size, seed):
        return (torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(seed)),)


class FMTestSaveNamed:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "filename": ("STRING", {"default": "x.json"})}}

    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    def save(self, images, filename):
        name = os.path.basename(filename)
        pixels = (images[0].cpu().numpy() * 255).clip(0, 255).astype(np.uint8)
        os.makedirs(folder_paths.get_output_directory(), exist_ok=True)
        Image.fromarray(pixels).save(os.path.join(folder_paths.get_output_directory(), name), format="PNG")
        return {"ui": {"images": [{"filename": name, "subfolder": "", "type": "output"}]}}


def _fail_marked_prompts(json_data):
    prompt = json_data.get("prompt") or {}
    if any((node.get("_meta") or {}).get("title") == FAULT_500_TITLE for node in prompt.values()):
        json_data["number"] = "not a number"  # ComfyUI's post_prompt calls float() on it: a real 500
    return json_data


PromptServer.instance.add_on_prompt_handler(_fail_marked_prompts)

NODE_CLASS_MAPPINGS = {"FMTestNoiseImage": FMTestNoiseImage, "FMTestSaveNamed": FMTestSaveNamed}
