"""Batch edits through the client on two real servers with the pack: a prompts file names
local images, the client uploads each one to the server that runs its job (POST
/upload/image) and sets it on the edit workflow's Load Image. One server is killed mid-run:
every image is still edited exactly once, each sidecar names its source image, no server
received the same upload twice, and a rerun does nothing and uploads nothing."""

from __future__ import annotations

import csv
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from comfyui_flowmatch.client.batch import run_queue
from comfyui_flowmatch.client.images import uploads
from comfyui_flowmatch.client.runner import QueueSettings
from comfyui_flowmatch.client.state import StateFile
from comfyui_flowmatch.models.data import COLORS, make_caption
from comfyui_flowmatch.models.edit_bench import hand_drawn

pytestmark = pytest.mark.integration

WORKFLOW = Path(__file__).resolve().parents[2] / "example_workflows" / "api" / "edit_image_api.json"
IMAGES = 8
FAST = QueueSettings(grace_s=2.0, audit_s=2.0, progress=False)


@pytest.fixture(scope="module")
def servers(start_comfy_server, comfy_server):
    """A fresh server to kill, and the suite's shared one (whose input folder gets only content-named files)."""
    return [start_comfy_server(), comfy_server]


def edit_rows(folder: Path) -> Path:
    """8 PIL-drawn images and a CSV that edits each one's colour (paths relative to the CSV)."""
    images, captions = hand_drawn(IMAGES, seed=11)
    (folder / "images").mkdir()
    with open(folder / "edits.csv", "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["image", "Source prompt.text", "Target prompt.text"])
        for i, (image, caption) in enumerate(zip(images, captions)):
            name = f"images/source_{i}.png"
            array = (image.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
            Image.fromarray(array).save(folder / name)
            color, shape = caption.split()[1:3]
            new_color = next(c for c in COLORS if c != color and (c, shape) != ("cyan", "square"))
            writer.writerow([name, caption, make_caption(new_color, shape, caption.split()[-2])])
    return folder / "edits.csv"


def slow_edit_workflow(prefix: str) -> dict:
    """The shipped edit workflow with more noise draws, so that a kill lands mid-batch."""
    workflow = json.loads(WORKFLOW.read_text())
    edit = next(node for node in workflow.values() if node["class_type"] == "FlowMatchEdit")
    edit["inputs"]["n_avg"] = 8
    next(node for node in workflow.values() if node["class_type"] == "SaveImage")["inputs"]["filename_prefix"] = prefix
    return workflow


def test_eight_edits_over_two_servers_with_one_killed(servers, tmp_path):
    prompts = edit_rows(tmp_path)
    out = tmp_path / "out"
    workflow = slow_edit_workflow("client_edits")
    urls = [s.url for s in servers]
    pool = ThreadPoolExecutor(max_workers=1)
    batch = pool.submit(run_queue, workflow, prompts, out, urls, settings=FAST)
    deadline = time.monotonic() + 300
    while len(list(out.glob("*.png"))) < 2:
        assert time.monotonic() < deadline and not batch.done(), "no edits arrived"
        time.sleep(0.05)
    servers[0].kill()
    summary = batch.result(timeout=600)
    pool.shutdown()
    assert summary.ok and summary.done == IMAGES, summary.format()

    results = sorted(out.glob("*.png"))
    assert len(results) == IMAGES, [p.name for p in results]
    sidecars = [json.loads(p.with_suffix(".json").read_text()) for p in results]
    sources = sorted(Path(s["row_values"]["source_image"]).name for s in sidecars)
    assert sources == sorted(f"source_{i}.png" for i in range(IMAGES))
    for sidecar in sidecars:
        assert Path(sidecar["row_values"]["source_image"]).is_file()
        assert sidecar["inputs"]["2"]["inputs"]["image"] == sidecar["row_values"]["image"]
    state = StateFile(out)
    state.close()
    assert sorted(r.status for r in state.records.values()) == ["done"] * IMAGES
    lost = [a for r in state.records.values() for a in r.attempts if "lost" in a]
    assert lost and all(a["server"] == servers[0].url for a in lost), "the kill should land mid-batch"
    survivor_history = set(servers[1].get_json("/history"))
    for record in state.records.values():
        if record.server == servers[1].url:
            assert sum(a["prompt_id"] in survivor_history for a in record.attempts) == 1, record
    sent = [(u["server"], u["name"]) for u in uploads(out)]
    assert len(sent) == len(set(sent)), "an image was uploaded twice to one server"
    assert {name for _, name in sent} == {s["row_values"]["image"] for s in sidecars}

    rerun = run_queue(workflow, prompts, out, [servers[1].url], settings=FAST)
    assert rerun.skipped == IMAGES and rerun.done == 0, rerun.format()
    assert [(u["server"], u["name"]) for u in uploads(out)] == sent, "the rerun uploaded again"
