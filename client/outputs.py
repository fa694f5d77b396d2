"""A finished job's files: the server's image bytes as-is, and one JSON sidecar per image.

Images are fetched with GET /view, so the PNG text chunks ComfyUI wrote (``prompt`` and
``workflow``) are kept. Names: ``<job>-<seed>.png``; a job with several images gets
``<job>-<seed>_<n>.png`` (n from 1). The server's suffix is kept if it is one of
`MEDIA_SUFFIXES` (so an image can never be named like its ``.json`` sidecar or the state
file); a job whose server file has another suffix fails with the file's name. Every write
is atomic (temporary file + rename) and leaves no temporary file behind when it fails.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from .jobs import Job
from .validate import is_link


def output_images(history_entry: dict) -> list[dict]:
    """The saved (type ``output``) images of a /history entry, in node order."""
    images = []
    for node_output in (history_entry.get("outputs") or {}).values():
        images += [image for image in node_output.get("images", []) if image.get("type", "output") == "output"]
    return images


MEDIA_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".apng", ".avif", ".bmp", ".tif", ".tiff",
                  ".mp4", ".webm", ".mov", ".mkv")


def image_names(job: Job, images: list[dict]) -> list[str]:
    """The file names the job's images get in the output folder.

    Raises:
        ValueError: a server file whose suffix is not in `MEDIA_SUFFIXES`, named.
    """
    suffixes = [Path(str(image.get("filename", ""))).suffix.lower() or ".png" for image in images]
    for image, suffix in zip(images, suffixes):
        if suffix not in MEDIA_SUFFIXES:
            raise ValueError(f"the server saved {image.get('filename')!r}; the client only saves images and videos "
                             f"({', '.join(MEDIA_SUFFIXES)}), so it is left on the server")
    if len(images) == 1:
        return [f"{job.stem}{suffixes[0]}"]
    return [f"{job.stem}_{n}{suffix}" for n, suffix in enumerate(suffixes, 1)]


def save_outputs(
    job: Job,
    images: list[dict],
    fetch: Callable[[dict], bytes],
    out_dir: Path,
    details: dict[str, Any],
) -> list[str]:
    """Fetch and write every image of `job` and its sidecar; returns the image file names."""
    names = image_names(job, images)
    for name, image in zip(names, images):
        write_atomic(out_dir / name, fetch(image))
        sidecar = {**job_description(job), **details, "image": name,
                   "server_file": {key: image.get(key, "") for key in ("filename", "subfolder", "type")}}
        write_atomic(out_dir / f"{Path(name).stem}.json", json.dumps(sidecar, indent=1).encode())
    return names


def job_description(job: Job) -> dict[str, Any]:
    """Prompt, seed, row and every literal input of the job, for its sidecar."""
    return {
        "job": job.key,
        "row": job.row.index,
        "line": job.row.line,
        "repeat": job.repeat,
        "prompt": job.row.values.get("prompt"),
        "seed": job.seed,
        "row_values": job.row.values,
        "inputs": {
            node_id: {
                "class_type": node["class_type"],
                "title": (node.get("_meta") or {}).get("title"),
                "inputs": {name: value for name, value in node["inputs"].items() if not is_link(value)},
            }
            for node_id, node in job.prompt.items()
        },
    }


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one."""
    temporary = path.with_name(f".{path.name}.part")
    try:
        with open(temporary, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
