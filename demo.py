"""`make demo`: the bundled model in a real ComfyUI, eight prompts through the batch client.

Starts ComfyUI with this pack on a free local port, checks that the pack loaded, queues
example_workflows/api/text_to_image_api.json for eight varied prompts (two of them colour/shape pairs
the model never saw in training), writes the PNGs, their JSON sidecars and a contact sheet
to output/demo/, judges each image with the model's adherence check, prints the paths and
stops the server. Then the few-step comparison: the same prompts and seeds with the base
model at Euler 20 steps (CFG 4, 40 model calls) and the reflowed model at Euler 1 and 2
steps (CFG 1, 1 and 2 model calls), in output/demo/few_steps/ with its own contact sheet
(one row per prompt), when models/weights/flowmatch_shapes_reflow.safetensors exists.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .client.batch import run_queue
from .client.contact_sheet import contact_sheet
from .client.local_server import REPO_ROOT, LocalComfyUI, LocalComfyUIError
from .client.state import STATE_FILE_NAME, StateFile
from .models.evaluate import judge

WORKFLOW = REPO_ROOT / "example_workflows" / "api" / "text_to_image_api.json"
OUT_DIR = REPO_ROOT / "output" / "demo"
FEW_STEPS_DIR = OUT_DIR / "few_steps"
BASE_CHECKPOINT = "flowmatch_shapes.safetensors"
REFLOW_CHECKPOINT = "flowmatch_shapes_reflow.safetensors"
REFLOW_PATH = REPO_ROOT / "models" / "weights" / REFLOW_CHECKPOINT
FEW_STEP_SETTINGS = (  # (label, checkpoint, Euler steps, cfg)
    ("base, 20 steps", BASE_CHECKPOINT, 20, 4.0),
    ("reflow, 1 step", REFLOW_CHECKPOINT, 1, 1.0),
    ("reflow, 2 steps", REFLOW_CHECKPOINT, 2, 1.0),
)
PACK_MODULE = "custom_nodes.comfyui_flowmatch"
PROMPTS = [
    "a red circle on a black background",
    "a yellow square on a gray background",
    "a green triangle on a black background in the top left",
    "a white circle on a gray background in the center",
    "a blue square on a black background in the bottom right",
    "a purple triangle on a gray background",  # held out of training
    "an orange circle on a black background",  # held out of training
    "a cyan triangle on a gray background in the top right",
]


def adherence(image_path: Path, prompt: str) -> dict[str, bool]:
    """The model issue's analytic check on a saved PNG."""
    with Image.open(image_path) as image:
        pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
    return judge(pixels, prompt)


def few_step_rows() -> list[dict]:
    """One job per (prompt, setting); a prompt keeps its seed across settings."""
    return [
        {"name": f"p{i + 1}-{label.replace(', ', '-').replace(' ', '')}", "prompt": prompt, "seed": i,
         "ckpt_name": ckpt, "steps": steps, "cfg": cfg, "solver": "euler"}
        for i, prompt in enumerate(PROMPTS) for label, ckpt, steps, cfg in FEW_STEP_SETTINGS
    ]


def report_few_steps(rows: list[dict]) -> None:
    """Judge the comparison images and write their contact sheet (prompts down, settings across)."""
    state = StateFile(FEW_STEPS_DIR)
    state.close()
    labels = {row["name"]: label for row, (label, *_rest) in zip(rows, FEW_STEP_SETTINGS * len(PROMPTS))}
    images, captions, passed = [], [], {label: 0 for label, *_rest in FEW_STEP_SETTINGS}
    for row in rows:
        record = state.records.get(row["name"])  # the job key is the row name
        if record is None or record.status != "done" or not record.images:
            continue
        image = FEW_STEPS_DIR / record.images[0]
        verdict = adherence(image, row["prompt"])
        passed[labels[row["name"]]] += verdict["all"] and verdict.get("position", True)
        images.append(image)
        captions.append(f"{labels[row['name']]}: {row['prompt']}")
    for label, count in passed.items():
        print(f"few steps, {label}: {count}/{len(PROMPTS)} images show what their prompt asks")
    if images:
        sheet = contact_sheet(images, captions, FEW_STEPS_DIR / "contact_sheet.png", columns=len(FEW_STEP_SETTINGS))
        print(f"few-step contact sheet: {sheet}")


def main() -> int:
    """Run the demo; returns the exit status (0 when all eight images were made)."""
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
            rows = [{"name": f"demo{i + 1}", "prompt": prompt} for i, prompt in enumerate(PROMPTS)]
            summary = run_queue(WORKFLOW, rows, OUT_DIR, [server.url], seed="0-7")
            few_rows, few_summary = [], None
            if REFLOW_PATH.is_file():
                FEW_STEPS_DIR.mkdir(parents=True, exist_ok=True)
                (FEW_STEPS_DIR / STATE_FILE_NAME).unlink(missing_ok=True)
                few_rows = few_step_rows()
                few_summary = run_queue(WORKFLOW, few_rows, FEW_STEPS_DIR, [server.url])
            else:
                print(f"few-step comparison skipped: no {REFLOW_PATH} (make train-reflow writes it)")
    except LocalComfyUIError as error:
        print(f"demo: {error}", file=sys.stderr)
        return 1
    print(summary.format())
    state = StateFile(OUT_DIR)
    state.close()
    images = sorted(OUT_DIR / name for record in state.records.values() if record.status == "done" for name in record.images)
    prompts = [json.loads(image.with_suffix(".json").read_text())["prompt"] for image in images]
    passed = 0
    for image, prompt in zip(images, prompts):
        verdict = adherence(image, prompt)
        passed += verdict["all"] and verdict.get("position", True)
        wrong = [key for key, ok in verdict.items() if not ok and key != "all"]
        print(f"{image}  {'ok' if not wrong else 'wrong ' + ', '.join(wrong)}  ({prompt})")
    sheet = contact_sheet(images, prompts, OUT_DIR / "contact_sheet.png") if images else None
    print(f"adherence check: {passed}/{len(images)} images show what their prompt asks")
    if sheet:
        print(f"contact sheet: {sheet}")
    if few_summary is not None:
        print(few_summary.format())
        report_few_steps(few_rows)
    return 0 if len(images) == len(PROMPTS) and summary.ok and (few_summary is None or few_summary.ok) else 1


if __name__ == "__main__":
    sys.exit(main())
