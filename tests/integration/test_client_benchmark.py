"""Benchmark of the batch client (not a timed test): run with FLOWMATCH_BENCHMARK=1.

1. Client overhead: 200 jobs of a trivial workflow on one server. The server's own
   execution time per job comes from /history timestamps (the sidecars); the wall time
   per job beyond it is what the server spent outside the nodes plus any wait on the
   client. A bare baseline (all 200 prompts POSTed at once, then /queue polled until
   empty) gives the server's own per-prompt cost; the client's overhead is its wall time
   minus the baseline's, per job. The client's CPU time per job is reported too.
2. Images/min on the bundled model with one and two servers (needs
   example_workflows/api/text_to_image_api.json).
Results are printed and written to artifacts/benchmarks/client.json.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from comfyui_flowmatch.client.batch import run_queue
from comfyui_flowmatch.client.runner import QueueSettings

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not os.environ.get("FLOWMATCH_BENCHMARK"), reason="a benchmark: set FLOWMATCH_BENCHMARK=1 to run it"),
]

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS = REPO_ROOT / "artifacts" / "benchmarks" / "client.json"
BUNDLED = REPO_ROOT / "example_workflows" / "api" / "text_to_image_api.json"
TRIVIAL = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}, "_meta": {"title": "Canvas"}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bench"}},
}
QUIET = QueueSettings(progress=False)


def record(name: str, result: dict) -> None:
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[name] = result
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))
    print(f"\n{name}: {json.dumps(result)}")


def timed_run(workflow, rows, out: Path, servers: list[str], **kwargs) -> tuple[dict, list[dict]]:
    wall, cpu = time.perf_counter(), time.process_time()
    summary = run_queue(workflow, rows, out, servers, settings=QUIET, **kwargs)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert summary.ok, summary.format()
    sidecars = [json.loads(p.read_text()) for p in out.glob("*.json")]
    return {"jobs": summary.done, "wall_s": round(wall, 2), "client_cpu_s": round(cpu, 2),
            "images_per_min": round(60 * summary.images / wall, 1)}, sidecars


def bare_baseline_s(server, jobs: int) -> float:
    """Wall time for the server to take and run `jobs` prompts POSTed back to back."""
    started = time.perf_counter()
    for color in range(jobs):
        prompt = json.loads(json.dumps(TRIVIAL))
        prompt["1"]["inputs"]["color"] = 1000 + color
        assert server.post_json("/prompt", {"prompt": prompt})[0] == 200
    while any(server.get_json("/queue").values()):
        time.sleep(0.005)
    return time.perf_counter() - started


def test_client_overhead_per_job(start_comfy_server, tmp_path):
    server = start_comfy_server(with_pack=False)
    jobs = 200
    baseline = bare_baseline_s(server, jobs)
    result, sidecars = timed_run(TRIVIAL, [{} for _ in range(jobs)], tmp_path, [server.url], seed="0-199",
                                 seed_inputs=["Canvas.color"])
    execution = sum(s["timings"]["execution_s"] for s in sidecars)
    result |= {
        "server_execution_ms_per_job": round(1000 * execution / jobs, 2),
        "wall_minus_execution_ms_per_job": round(1000 * (result["wall_s"] - execution) / jobs, 2),
        "bare_baseline_ms_per_job": round(1000 * baseline / jobs, 2),
        "client_overhead_ms_per_job": round(1000 * (result["wall_s"] - baseline) / jobs, 2),
        "client_cpu_ms_per_job": round(1000 * result["client_cpu_s"] / jobs, 2),
    }
    record("trivial_200_jobs_1_server", result)


@pytest.mark.skipif(not BUNDLED.exists(), reason="example_workflows/api/text_to_image_api.json does not exist yet")
@pytest.mark.parametrize("count", [1, 2])
def test_bundled_model_images_per_minute(start_comfy_server, tmp_path, count):
    servers = [start_comfy_server().url for _ in range(count)]
    prompts = ["a red circle on a blue background", "a yellow square on a black background",
               "a green triangle in the top left corner", "a small white circle in the center"]
    rows = [{"prompt": prompts[i % len(prompts)]} for i in range(16)]
    result, _ = timed_run(BUNDLED, rows, tmp_path, servers, seed="0-15")
    record(f"bundled_model_16_images_{count}_servers", result)
