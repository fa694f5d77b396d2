"""Where flow-matching checkpoints live, which names are allowed, and whether a file is sound.

Models are listed from ComfyUI's `flow_matching` model folder (`models/flow_matching/`,
plus any `flow_matching:` entry of extra_model_paths.yaml) and the pack's bundled weights.
Only safetensors files are listed or opened: nothing is ever unpickled.
"""

from __future__ import annotations

import os
from pathlib import Path

import folder_paths

FOLDER_NAME = "flow_matching"
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


def checkpoint_names() -> list[str]:
    """Selectable file names, relative to the folder roots (what the loader's combo shows)."""
    return folder_paths.get_filename_list(FOLDER_NAME)


def resolve_checkpoint(name: str) -> str:
    """Absolute path of a listed checkpoint; ValueError for anything not in the list
    (unknown names, `../` escapes, other extensions) before a byte is read."""
    if name not in checkpoint_names():
        folders = ", ".join(folder_paths.get_folder_paths(FOLDER_NAME))
        raise ValueError(
            f"FlowMatchModelLoader: ckpt_name {name!r} is not a checkpoint in the flow_matching folders "
            f"({folders}). Put the .safetensors file there and pick it from the list."
        )
    try:
        return folder_paths.get_full_path_or_raise(FOLDER_NAME, name)
    except FileNotFoundError:  # listed, yet not a regular file: a pipe, a device, a link gone stale
        raise ValueError(
            f"FlowMatchModelLoader: ckpt_name {name!r} is in the flow_matching folders but is not a regular file "
            "(a pipe, a device or a broken link). Replace it with the .safetensors file itself."
        ) from None
