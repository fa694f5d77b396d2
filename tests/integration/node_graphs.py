"""Helpers for the node tests (loaded by path; not a test module): API-prompt builders,
tiny checkpoints in a server's models folder, saved images, websocket event capture."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build_tiny_checkpoints.py"
EXTRA_CUSTOM_NODES = HERE / "extra_custom_nodes"
BUNDLED = "flowmatch_shapes.safetensors"


TINY_FLOWMATCH = "tiny_flowmatch.safetensors"  # what the builder's --flowmatch-only writes


def build_tiny_checkpoints(out_dir: Path, flowmatch_only: bool = False) -> dict:
    """Run the builder script once; returns its detection report of the native files."""
    command = [sys.executable, str(BUILD_SCRIPT), str(out_dir)] + (["--flowmatch-only"] if flowmatch_only else [])
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def install(server, source: Path, name: str | None = None, folder: str = "flow_matching") -> str:
    """Copy a file into the server's models/<folder>; returns the name the loaders list."""
    target = server.models_dir / folder
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target / (name or source.name))
    return name or source.name


def install_tiny_flowmatch(server, out_dir: Path, name: str | None = None) -> str:
    """Build the tiny random-weight FlowMatch checkpoint into `out_dir` (as TINY_FLOWMATCH) and
    install it on `server` as `name`; returns the name the loader lists."""
    build_tiny_checkpoints(out_dir, flowmatch_only=True)
    return install(server, out_dir / TINY_FLOWMATCH, name)


def extra_paths_yaml(path: Path, **folders: Path) -> Path:
    """An extra_model_paths.yaml adding our test-only custom nodes (and any other folders)."""
    lines = ["fm_tests:", f"  custom_nodes: {EXTRA_CUSTOM_NODES}"]
    lines += [f"  {name}: {folder}" for name, folder in folders.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class Graph:
    """An API-format prompt built node by node: `g.add(class, **inputs)` -> link source id."""

    def __init__(self):
        self.prompt: dict = {}

    def add(self, class_type: str, **inputs) -> str:
        node_id = str(len(self.prompt) + 1)
        self.prompt[node_id] = {"class_type": class_type, "inputs": inputs}
        return node_id


def out(node_id: str, slot: int = 0) -> list:
    return [node_id, slot]


def text_to_image(g: Graph, ckpt: str, prompt: str, *, sampler: str = "FlowMatchSampler",
                  size: int = 32, steps: int = 8, cfg: float = 4.0, seed: int = 0, solver: str = "euler",
                  schedule: str = "model default", model_patch=None, encoder: str = "FlowMatchTextEncode",
                  prefix: str = "fm") -> str:
    """loader -> text encode -> sampler (ours or KSampler euler/simple) -> VAEDecode -> SaveImage;
    returns the SaveImage id. `model_patch(g, model_link) -> link` inserts e.g. a shift node."""
    loader = g.add("FlowMatchModelLoader", ckpt_name=ckpt)
    model = out(loader, 0)
    if model_patch is not None:
        model = model_patch(g, model)
    pos = g.add(encoder, clip=out(loader, 1), text=prompt)
    neg = g.add(encoder, clip=out(loader, 1), text="")
    latent = g.add("FlowMatchEmptyLatent", model=model, width=size, height=size, batch_size=1)
    common = dict(model=model, seed=seed, steps=steps, cfg=cfg, positive=out(pos), negative=out(neg),
                  latent_image=out(latent), denoise=1.0)
    if sampler == "FlowMatchSampler":
        sampled = g.add("FlowMatchSampler", solver=solver, schedule=schedule, shift=3.0, **common)
    else:
        sampled = g.add("KSampler", sampler_name="euler", scheduler="simple", **common)
    image = g.add("VAEDecode", samples=out(sampled), vae=out(loader, 2))
    return g.add("SaveImage", images=out(image), filename_prefix=prefix)


def saved_latent(server, entry: dict, node_id: str):
    """The tensor a SaveLatent node wrote (a safetensors file under output/)."""
    from safetensors.torch import load_file

    (item,) = entry["outputs"][node_id]["latents"]
    return load_file(str(server.output_dir / item["subfolder"] / item["filename"]))["latent_tensor"]


def saved_images(server, entry: dict, node_id: str) -> list[np.ndarray]:
    """The PNGs a SaveImage node wrote, as float arrays [H, W, 3] in [0, 1]."""
    images = entry["outputs"][node_id]["images"]
    return [
        np.asarray(Image.open(server.output_dir / item["subfolder"] / item["filename"]).convert("RGB"), dtype=np.float64)
        / 255.0
        for item in images
    ]


def error_message(entry: dict) -> str:
    for event, data in entry["status"]["messages"]:
        if event == "execution_error":
            return data["exception_message"]
    return ""


class EventRecorder:
    """Connects to /ws with its own clientId and records text and binary frames in a thread;
    `texts` holds the (node id, text) of ComfyUI's progress-text frames (binary type 3)."""

    def __init__(self, server):
        import websocket

        self.client_id = uuid.uuid4().hex
        self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{server.port}/ws?clientId={self.client_id}", timeout=120
        )
        self.events: list[tuple[str, dict]] = []
        self.binary_frames = 0
        self.texts: list[tuple[str, str]] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        import websocket

        while True:
            try:
                frame = self.ws.recv()
            except (websocket.WebSocketException, OSError):
                return
            if not frame:
                return
            if isinstance(frame, bytes):
                self.binary_frames += 1
                if int.from_bytes(frame[:4], "big") == 3:
                    length = int.from_bytes(frame[4:8], "big")
                    self.texts.append((frame[8:8 + length].decode(), frame[8 + length:].decode()))
                continue
            message = json.loads(frame)
            self.events.append((message["type"], message.get("data", {})))
            data = message.get("data", {})
            if message["type"] == "executing" and data.get("node") is None and data.get("prompt_id"):
                self.done.set()

    def of(self, event_type: str, prompt_id: str | None = None) -> list[dict]:
        return [d for t, d in self.events if t == event_type and (prompt_id is None or d.get("prompt_id") == prompt_id)]

    def close(self):
        self.ws.close()
        self.thread.join(timeout=5)
