"""The batch client against two real ComfyUI servers on loopback (built-in nodes only).

Jobs are EmptyImage -> ImageBlur -> SaveImage, a few tenths of a second each on CPU, so
that killing a server or the client lands mid-batch. The seed goes into EmptyImage's
colour, so no two jobs share a cached result. "Executed once" is checked on the servers:
every job has exactly one /history entry across both servers, and each test's filename
prefix counts the files the servers saved.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from comfyui_flowmatch.client.batch import run_queue
from comfyui_flowmatch.client.runner import QueueSettings
from comfyui_flowmatch.client.state import STATE_FILE_NAME, StateFile

pytestmark = pytest.mark.integration

JOBS = 40
SEEDS = "1000-1999"
FAST = QueueSettings(grace_s=2.0, audit_s=2.0, progress=False)


def blur_workflow(prefix: str, size: int = 448, radius: int = 24) -> dict:
    """A job that takes a few tenths of a second on CPU; the seed becomes the canvas colour."""
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": size, "height": size, "batch_size": 1, "color": 0},
              "_meta": {"title": "Canvas"}},
        "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": radius, "sigma": 6.0},
              "_meta": {"title": "Blur"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def rows(count: int = JOBS) -> list[dict]:
    return [{"sigma": 4.0 + (i % 5)} for i in range(count)]


@pytest.fixture(scope="module")
def servers(start_comfy_server):
    return [start_comfy_server(with_pack=False), start_comfy_server(with_pack=False)]


@pytest.fixture
def two_servers(servers):
    """Both servers running (a previous test may have killed one)."""
    for server in servers:
        if not server.running:
            server.start()
    return servers


def in_background(call) -> Future:
    """Run `call` in a thread; `.result(timeout)` returns its value or raises its exception."""
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(call)
    pool.shutdown(wait=False)
    return future


def queue(out: Path, servers, prefix: str, count: int = JOBS, settings: QueueSettings = FAST, **kwargs):
    return run_queue(blur_workflow(prefix), rows(count), out, [s.url for s in servers], seed=SEEDS,
                     seed_inputs=["Canvas.color"], settings=settings, **kwargs)


def records(out: Path) -> dict:
    state = StateFile(out)
    state.close()
    return state.records


def assert_exactly(out: Path, count: int) -> None:
    """`count` images with sidecars, each job done once, every sidecar naming its own image."""
    images = sorted(out.glob("*.png"))
    assert len(images) == count, [p.name for p in images]
    for image in images:
        sidecar = json.loads(image.with_suffix(".json").read_text())
        assert sidecar["image"] == image.name and image.name == f"{sidecar['job']}-{sidecar['seed']}.png"
    done = {key: r for key, r in records(out).items() if r.status == "done"}
    assert len(done) == count and sorted(name for r in done.values() for name in r.images) == [p.name for p in images]


def history_hits(servers, out: Path) -> dict[str, int]:
    """Per job, how many /history entries of its attempts the live servers hold."""
    histories = [set(s.get_json("/history")) for s in servers if s.running]
    return {
        key: sum(attempt["prompt_id"] in history for attempt in record.attempts for history in histories)
        for key, record in records(out).items()
    }


def saved_on_servers(servers, prefix: str) -> int:
    return sum(len(list(s.output_dir.glob(f"{prefix}_*.png"))) for s in servers)


def wait_for_images(out: Path, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(list(out.glob("*.png"))) < count:
        assert time.monotonic() < deadline, f"fewer than {count} images after {timeout} s"
        time.sleep(0.05)


def test_forty_jobs_over_two_servers(two_servers, tmp_path):
    summary = queue(tmp_path, two_servers, "forty")
    assert summary.ok and summary.done == JOBS, summary.format()
    assert_exactly(tmp_path, JOBS)
    assert set(history_hits(two_servers, tmp_path).values()) == {1}
    assert saved_on_servers(two_servers, "forty") == JOBS
    used = {json.loads(p.read_text())["server"] for p in tmp_path.glob("*.json")}
    assert used == {s.url for s in two_servers}, "both servers should have taken jobs"
    png = next(tmp_path.glob("*.png")).read_bytes()
    assert b"tEXtprompt" in png, "the PNG should carry ComfyUI's prompt metadata"


def test_killed_server_moves_its_jobs(two_servers, tmp_path):
    doomed, survivor = two_servers
    batch = in_background(lambda: queue(tmp_path, two_servers, "killed"))
    wait_for_images(tmp_path, 8)
    doomed.kill()
    summary = batch.result(timeout=180)
    assert summary.ok and summary.done == JOBS, summary.format()
    assert_exactly(tmp_path, JOBS)
    lost = [a for r in records(tmp_path).values() for a in r.attempts if "lost" in a]
    assert lost and all(a["server"] == doomed.url for a in lost), lost
    assert summary.resubmitted == len(lost)
    finished_by_survivor = [r for r in records(tmp_path).values() if r.server == survivor.url]
    assert all(history_hits([survivor], tmp_path)[r.job] == 1 for r in finished_by_survivor)


def test_killed_client_resumes_without_doing_anything_twice(two_servers, tmp_path):
    workflow = tmp_path / "workflow.json"
    workflow.write_text(json.dumps(blur_workflow("resume")))
    prompts = tmp_path / "rows.jsonl"
    prompts.write_text("".join(json.dumps(row) + "\n" for row in rows()))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "comfyui_flowmatch", "queue", str(workflow), "--prompts", str(prompts),
               "--out", str(out), "--seed", SEEDS, "--seed-input", "Canvas.color", "--no-progress",
               *[arg for s in two_servers for arg in ("--server", s.url)]]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_images(out, 10)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert len(list(out.glob("*.png"))) < JOBS, "the client finished before it could be killed"
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert_exactly(out, JOBS)
    assert set(history_hits(two_servers, out).values()) == {1}
    assert saved_on_servers(two_servers, "resume") == JOBS
    assert "skipped" in rerun.stdout, rerun.stdout
    # The journal records a submission before its POST, so a kill in between leaves an id no
    # server ever saw: the rerun may declare exactly those lost (and submit them again), nothing else.
    reached = set().union(*(s.get_json("/history") for s in two_servers))
    lost = [a for r in records(out).values() for a in r.attempts if "lost" in a]
    assert not any(a["prompt_id"] in reached for a in lost), lost
    assert f"resubmitted {len(lost)};" in rerun.stdout, rerun.stdout


def test_restarted_server_loses_the_running_job_which_runs_again_once(two_servers, tmp_path):
    server = two_servers[0]
    slow = QueueSettings(grace_s=60.0, audit_s=2.0, progress=False)
    batch = in_background(lambda: run_queue(
        blur_workflow("restart", size=1024, radius=31), rows(2), tmp_path, [server.url], seed=SEEDS,
        seed_inputs=["Canvas.color"], settings=slow))
    deadline = time.monotonic() + 60
    while not server.get_json("/queue")["queue_running"]:
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)
    server.restart()
    summary = batch.result(timeout=180)
    assert summary.ok and summary.done == 2, summary.format()
    assert_exactly(tmp_path, 2)
    state = records(tmp_path)
    assert summary.resubmitted >= 1
    for record in state.values():
        lost = [a for a in record.attempts if "lost" in a]
        assert len(record.attempts) == len(lost) + 1 <= 2, record
        assert history_hits([server], tmp_path)[record.job] == 1, "the restarted server ran it exactly once"


def test_invalid_rows_are_reported_first_and_valid_rows_still_run(two_servers, tmp_path, caplog):
    bad_rows = [{"sigma": 2.0}, {"blur_radius": 999}, {"Canvas.colour": 5}, {"sigma": 3.0}, {"Blur.sigma": "soft"}]
    summary = run_queue(blur_workflow("invalid"), bad_rows, tmp_path, [two_servers[0].url], settings=FAST)
    assert summary.done == 2 and not summary.failed, summary.format()
    by_row = {issue.row: issue for issue in summary.invalid}
    assert set(by_row) == {"row 2 (line 2)", "row 3 (line 3)", "row 5 (line 5)"}
    assert by_row["row 2 (line 2)"].node == "2 'Blur' (ImageBlur)" and by_row["row 2 (line 2)"].input == "blur_radius"
    assert "bigger than the maximum" in by_row["row 2 (line 2)"].message
    assert "has no input 'colour'" in by_row["row 3 (line 3)"].message
    assert "not a number" in by_row["row 5 (line 5)"].message
    assert set(records(tmp_path)) == {"0001", "0004"}, "invalid rows must not be queued"


def test_server_validation_error_is_reported_with_node_errors_and_not_retried(two_servers, tmp_path):
    workflow = {
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "mismatch"},
              "_meta": {"title": "Save"}},
    }
    summary = run_queue(workflow, [{"filename_prefix": "mismatch"}], tmp_path, [two_servers[0].url], settings=FAST)
    reason = summary.failed["0001"]
    assert "server rejected the prompt" in reason and "node 2 'Save' (SaveImage)" in reason, reason
    assert "input 'images'" in reason and "return_type_mismatch" in reason, reason
    assert len(records(tmp_path)["0001"].attempts) == 1
    assert not list(tmp_path.glob("*.png")) and (tmp_path / STATE_FILE_NAME).exists()


def test_cli_reports_a_finished_batch_as_skipped_on_rerun(two_servers, tmp_path):
    prompts = tmp_path / "rows.csv"
    prompts.write_text("name,sigma,seed\nfirst,4.5,7\nsecond,5.5,8\n")
    workflow = tmp_path / "workflow.json"
    workflow.write_text(json.dumps(blur_workflow("cli")))
    command = [sys.executable, "-m", "comfyui_flowmatch", "queue", str(workflow), "--prompts", str(prompts),
               "--out", str(tmp_path / "out"), "--server", two_servers[0].url, "--seed-input", "Canvas.color",
               "--no-progress"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert first.returncode == 0 and "done 2," in first.stdout, first.stdout + first.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["first-7.png", "second-8.png"]
    again = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert again.returncode == 0 and "done 0," in again.stdout and "skipped 2" in again.stdout, again.stdout


def test_ctrl_c_leaves_a_consistent_state_file(two_servers, tmp_path):
    workflow = tmp_path / "workflow.json"
    workflow.write_text(json.dumps(blur_workflow("ctrlc")))
    prompts = tmp_path / "rows.jsonl"
    prompts.write_text("".join(json.dumps(row) + "\n" for row in rows(12)))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "comfyui_flowmatch", "queue", str(workflow), "--prompts", str(prompts),
               "--out", str(out), "--seed", SEEDS, "--seed-input", "Canvas.color", "--no-progress",
               "--server", two_servers[0].url]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_images(out, 3)
    first.send_signal(signal.SIGINT)
    output = first.communicate(timeout=60)[0]
    assert first.returncode == 130 and "interrupted" in output, output
    lines = (out / STATE_FILE_NAME).read_text().splitlines()
    assert all(json.loads(line)["event"] in ("submitted", "done") for line in lines), "every line is a whole event"
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert_exactly(out, 12)
    assert set(history_hits(two_servers, out).values()) == {1}
