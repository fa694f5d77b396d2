"""Where flow-matching checkpoints live, which names are allowed, and whether a file is sound.

The loader lists, in this order of precedence, the pack's `flow_matching` folder
(`models/flow_matching/` and the bundled weights) and ComfyUI's standard model folders
`diffusion_models` (which includes the legacy `unet`) and `checkpoints`, each with any
extra_model_paths.yaml entries for that folder. A name found in several folders means the
first one. Files that are not flow models (an SD1.5 checkpoint) are listed too and refused
on load with a message naming what they are. Only safetensors files are listed or opened:
nothing is ever unpickled.
"""

from __future__ import annotations

import os
from pathlib import Path

import folder_paths

FOLDER_NAME = "flow_matching"
SEARCHED_FOLDERS = (FOLDER_NAME, "diffusion_models", "checkpoints")
EXTENSIONS = {".safetensors", ".sft"}
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "models" / "weights"


def register_folder() -> None:
    """Register (or extend) the `flow_matching` folder; idempotent, keeps yaml-added paths."""
    default_dir = os.path.join(folder_paths.models_dir, FOLDER_NAME)
    os.makedirs(default_dir, exist_ok=True)
    paths, _ = folder_paths.folder_names_and_paths.get(FOLDER_NAME, ([], set()))
    paths = list(paths)
    for path in (default_dir, str(BUNDLED_DIR)):
        if path not in paths:
            paths.append(path)
    folder_paths.folder_names_and_paths[FOLDER_NAME] = (paths, set(EXTENSIONS))


def _safetensors_names(folder: str) -> list[str]:
    if folder not in folder_paths.folder_names_and_paths:
        return []
    return [name for name in folder_paths.get_filename_list(folder) if os.path.splitext(name)[1].lower() in EXTENSIONS]


def checkpoint_names() -> list[str]:
    """Selectable file names, relative to their folder roots (what the loader's combo shows):
    the flow_matching folder's first, then diffusion_models', then checkpoints', each name once."""
    names: dict[str, None] = {}
    for folder in SEARCHED_FOLDERS:
        names.update(dict.fromkeys(_safetensors_names(folder)))
    return list(names)


def resolve_checkpoint(name: str) -> str:
    """Absolute path of a listed checkpoint, from the first folder that lists it; ValueError for
    anything not in the list (unknown names, `../` escapes, other extensions) before a byte is read."""
    for folder in SEARCHED_FOLDERS:
        if name in _safetensors_names(folder):
            try:
                return folder_paths.get_full_path_or_raise(folder, name)
            except FileNotFoundError:  # listed, yet not a regular file: a pipe, a device, a link gone stale
                raise ValueError(
                    f"FlowMatchModelLoader: ckpt_name {name!r} is in the {folder} folders but is not a regular file "
                    "(a pipe, a device or a broken link). Replace it with the .safetensors file itself."
                ) from None
    folders = ", ".join(path for folder in SEARCHED_FOLDERS for path in folder_paths.get_folder_paths(folder))
    raise ValueError(
        f"FlowMatchModelLoader: ckpt_name {name!r} is not a checkpoint (.safetensors) in the model folders "
        f"flow_matching, diffusion_models or checkpoints ({folders}). Put the file there and pick it from the list "
        "(press R in the canvas to refresh it)."
    )
