"""Input images for batch jobs: a prompts-file column naming a local image.

The ``image`` column names a local file (relative to the prompts file's folder). Before
planning, each such row gets ``image`` = the name the file will have in the server's
input folder, ``flowmatch_<sha256[:16]><suffix>`` (the same on every server, so a job may
move between servers), which the usual column rules set on the workflow's image loader
(every literal ``image`` input, e.g. LoadImage's), and ``source_image`` = the local path,
which the sidecars keep. Just before a job is submitted to a server, the file is uploaded
through POST /upload/image unless that server already has it (GET /view answers), so a
rerun or a job moved to another server uploads nothing twice. Every upload is appended to
``uploads.jsonl`` in the output folder.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from .api import ComfyAPI, ServerUnavailable
from .jobs import Job
from .overrides import resolve_column
from .rows import Row
from .validate import combo_options, input_specs

log = logging.getLogger(__name__)

IMAGE_COLUMN = "image"
SOURCE_COLUMN = "source_image"
UPLOAD_PREFIX = "flowmatch_"
UPLOADS_LOG = "uploads.jsonl"


@dataclass(frozen=True)
class SourceImage:
    """A local image and the name it has in a server's input folder."""

    path: Path
    server_name: str


def source_image(path: Path) -> SourceImage:
    data = path.read_bytes()
    return SourceImage(path, f"{UPLOAD_PREFIX}{hashlib.sha256(data).hexdigest()[:16]}{path.suffix.lower() or '.png'}")


def attach_images(rows: list[Row], base_dir: Path) -> tuple[list[Row], dict[str, SourceImage]]:
    """Rows whose ``image`` names a local file get the server-side name; returns (rows, name -> image).

    Raises:
        ValueError: a row names a file that does not exist (naming the row and the path).
    """
    images: dict[str, SourceImage] = {}
    result = []
    for row in rows:
        if IMAGE_COLUMN not in row.values:
            result.append(row)
            continue
        path = Path(str(row.values[IMAGE_COLUMN])).expanduser()
        path = path if path.is_absolute() else base_dir / path
        if not path.is_file():
            raise ValueError(f"{row.label}: image {row.values[IMAGE_COLUMN]!r} is not a file ({path})")
        image = source_image(path)
        images[image.server_name] = image
        result.append(replace(row, values={**row.values, IMAGE_COLUMN: image.server_name, SOURCE_COLUMN: str(path)}))
    return result, images


def with_upload_options(object_info: dict[str, dict], prompt: dict[str, dict],
                        images: dict[str, SourceImage]) -> dict[str, dict]:
    """`object_info` in which the image loaders' combos also list the names not uploaded yet."""
    if not images:
        return object_info
    info = dict(object_info)
    for node_id, name in resolve_column(IMAGE_COLUMN, prompt, object_info):
        class_type = prompt[node_id]["class_type"]
        entry = info[class_type] = copy.deepcopy(info[class_type])
        for section in ("required", "optional"):
            spec = entry.get("input", {}).get(section, {}).get(name)
            if spec is None:
                continue
            kind, options = input_specs({"input": {section: {name: spec}}})[name]
            if combo_options(kind, options) is None:
                continue
            if isinstance(kind, list):
                spec[0] = kind + sorted(images)
            else:
                spec[1]["options"] = list(options.get("options", [])) + sorted(images)
    return info


class Uploader:
    """Makes sure a job's input image is on the server it goes to (thread-safe)."""

    def __init__(self, images: dict[str, SourceImage], out_dir: Path):
        self.images = images
        self.log_path = Path(out_dir) / UPLOADS_LOG
        self.lock = threading.Lock()

    def __call__(self, job: Job, api: ComfyAPI) -> None:
        """Upload the job's image to `api`'s server unless it has it.

        Raises:
            ServerUnavailable: the server did not answer (the job waits for another server).
        """
        name = job.row.values.get(IMAGE_COLUMN)
        image = self.images.get(name) if isinstance(name, str) else None
        if image is None or on_server(api, image.server_name):
            return
        upload(api, image)
        with self.lock, open(self.log_path, "a", encoding="utf-8") as out:
            out.write(json.dumps({"server": api.url, "name": image.server_name, "path": str(image.path),
                                  "job": job.key, "time": time.time()}) + "\n")
        log.info("uploaded %s to %s as %s", image.path, api.url, image.server_name)


def uploads(out_dir: Path) -> list[dict]:
    """The uploads an output folder's log records, oldest first."""
    path = Path(out_dir) / UPLOADS_LOG
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


def on_server(api: ComfyAPI, name: str) -> bool:
    """Whether the server's input folder has `name` (GET /view?type=input)."""
    query = urllib.parse.urlencode({"filename": name, "type": "input"})
    try:
        with urllib.request.urlopen(f"{api.url}/view?{query}", timeout=api.timeout) as response:
            response.read()
            return True
    except urllib.error.HTTPError as error:
        if error.code >= 500:
            raise ServerUnavailable(f"{api.url}/view {name}: HTTP {error.code}") from error
        return False
    except (urllib.error.URLError, OSError) as error:
        raise ServerUnavailable(f"{api.url}/view {name}: {getattr(error, 'reason', error)}") from error


def upload(api: ComfyAPI, image: SourceImage) -> None:
    """POST /upload/image (multipart: the file as ``image``, type input, overwrite)."""
    boundary = uuid.uuid4().hex
    parts = [
        (f'Content-Disposition: form-data; name="image"; filename="{image.server_name}"\r\n'
         "Content-Type: application/octet-stream\r\n\r\n").encode() + image.path.read_bytes(),
        b'Content-Disposition: form-data; name="type"\r\n\r\ninput',
        b'Content-Disposition: form-data; name="overwrite"\r\n\r\ntrue',
    ]
    body = b"".join(f"--{boundary}\r\n".encode() + part + b"\r\n" for part in parts) + f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{api.url}/upload/image", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=api.timeout) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as error:
        if error.code >= 500:
            raise ServerUnavailable(f"{api.url}/upload/image: HTTP {error.code}") from error
        raise ValueError(f"{api.url}/upload/image refused {image.path}: HTTP {error.code} {error.read()[:200]!r}") from error
    except (urllib.error.URLError, OSError) as error:
        raise ServerUnavailable(f"{api.url}/upload/image: {getattr(error, 'reason', error)}") from error
    if answer.get("name") != image.server_name:
        raise ValueError(f"{api.url} stored {image.path} as {answer.get('name')!r}, not {image.server_name!r}")
