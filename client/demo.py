"""`make demo`: a ComfyUI with this pack on a free local port, eight prompts through the batch client.

It checks that the pack loaded, queues workflows/text_to_image_api.json for eight varied
prompts (or, until that workflow exists, a stand-in of built-in nodes, and says so),
writes the PNGs, their sidecars and a contact sheet to output/demo/, prints the paths and
stops the server.
"""

from __future__ import annotations

import json
import logging
import sys

from .batch import run_queue
from .contact_sheet import contact_sheet
from .local_server import REPO_ROOT, LocalComfyUI, LocalComfyUIError
from .state import STATE_FILE_NAME, StateFile

WORKFLOW = REPO_ROOT / "workflows" / "text_to_image_api.json"
OUT_DIR = REPO_ROOT / "output" / "demo"
PACK_MODULE = "custom_nodes.comfyui_flowmatch"
PROMPTS = [
    "a red circle on a blue background",
    "a yellow square on a black background",
    "a green triangle in the top left corner",
    "a small white circle in the center",
    "a large purple square on an orange background",
    "two blue circles on a white background",
    "a cyan triangle at the bottom",
    "a big orange circle on a green background",
]
# Until the real workflow exists: one coloured canvas per prompt, built-in nodes only.
STAND_IN = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 128, "height": 128, "batch_size": 1, "color": 0},
          "_meta": {"title": "Canvas"}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "demo"}},
}
STAND_IN_COLOURS = [0xD03030, 0xE0D020, 0x30A040, 0xF0F0F0, 0x8040A0, 0x3050D0, 0x30C0C0, 0xF08020]


def main() -> int:
    """Run the demo; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / STATE_FILE_NAME).unlink(missing_ok=True)  # a demo always runs afresh
    try:
        with LocalComfyUI() as server:
            ours = sorted(name for name, node in server.api.object_info().items() if node.get("python_module") == PACK_MODULE)
            if not ours:
                print(f"demo: ComfyUI on {server.url} lists none of the pack's nodes; see {server.log_path}", file=sys.stderr)
                return 1
            print(f"ComfyUI on {server.url} loaded the pack: {', '.join(ours)}")
            if WORKFLOW.exists():
                rows = [{"prompt": prompt} for prompt in PROMPTS]
                summary = run_queue(WORKFLOW, rows, OUT_DIR, [server.url], seed="0-7")
            else:
                print(f"{WORKFLOW.relative_to(REPO_ROOT)} does not exist yet: queueing a stand-in of built-in nodes "
                      "(one coloured canvas per prompt) instead")
                rows = [{"name": f"standin{i + 1}", "Canvas.color": colour} for i, colour in enumerate(STAND_IN_COLOURS)]
                summary = run_queue(STAND_IN, rows, OUT_DIR, [server.url], seed="0-7")
    except LocalComfyUIError as error:
        print(f"demo: {error}", file=sys.stderr)
        return 1
    print(summary.format())
    state = StateFile(OUT_DIR)
    state.close()
    images = [OUT_DIR / name for record in state.records.values() if record.status == "done" for name in record.images]
    if not images:
        return 1
    captions = [json.loads(image.with_suffix(".json").read_text()).get("prompt") or image.stem for image in images]
    sheet = contact_sheet(images, captions, OUT_DIR / "contact_sheet.png")
    for path in [*images, sheet]:
        print(path)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
