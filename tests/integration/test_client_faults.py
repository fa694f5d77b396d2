"""The batch client against real ComfyUI servers that misbehave: every fault ends in a clear
message naming the server or file, nothing is lost, nothing is overwritten.

The server runs plain ComfyUI plus the test-only nodes in client_fault_nodes/ (a save node
that writes any file name, a noise image, and a POST /prompt that fails inside ComfyUI).
"""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from comfyui_flowmatch.client.batch import run_queue
from comfyui_flowmatch.client.cli import main as queue_main
from comfyui_flowmatch.client.folder_lock import LOCK_FILE_NAME
from comfyui_flowmatch.client.local_server import free_port
from comfyui_flowmatch.client.runner import QueueSettings
from comfyui_flowmatch.client.state import StateFile

pytestmark = pytest.mark.integration

FAULT_NODES = Path(__file__).resolve().parent / "client_fault_nodes"
FAULT_500_TITLE = "fault: 500 on POST /prompt"
FAST = QueueSettings(grace_s=2.0, audit_s=1.0, progress=False, max_attempts=2)
PACK_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(start_comfy_server, tmp_path_factory):
    config = tmp_path_factory.mktemp("fault_nodes") / "extra_model_paths.yaml"
    config.write_text(f"fm_client_faults:\n  custom_nodes: {FAULT_NODES}\n")
    started = start_comfy_server("--extra-model-paths-config", str(config), with_pack=False)
    if "FMTestSaveNamed" not in started.get_json("/object_info/FMTestSaveNamed"):
        pytest.fail(f"the test-only fault nodes did not load:\n{started.log()[-3000:]}")
    return started


def noise_workflow(size: int = 64, save: dict | None = None) -> dict:
    return {
        "1": {"class_type": "FMTestNoiseImage", "inputs": {"size": size, "seed": 0}},
        "2": save or {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "fault"}},
    }


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_server_file_named_like_a_sidecar_fails_its_job_and_overwrites_nothing(server, tmp_path):
    workflow = noise_workflow(save={"class_type": "FMTestSaveNamed", "inputs": {"images": ["1", 0], "filename": "x.png"}})
    rows = [{"name": "ok", "filename": "fault-ok.png"}, {"name": "evil", "filename": "fault-evil.json"}]
    summary = run_queue(workflow, rows, tmp_path, [server.url], seed="3", seed_inputs=["1.seed"], settings=FAST)
    assert summary.done == 1 and summary.images == 1 and list(summary.failed) == ["evil"]
    assert "the server saved 'fault-evil.json'; the client only saves images and videos" in summary.failed["evil"]
    assert files(tmp_path) == sorted([LOCK_FILE_NAME, "ok-3.json", "ok-3.png", "queue-state.jsonl"])
    assert (tmp_path / "ok-3.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "ok-3.json").read_text())["image"] == "ok-3.png"


def test_a_500_on_post_prompt_reports_the_servers_status_and_message(server, tmp_path):
    workflow = noise_workflow()
    workflow["2"]["_meta"] = {"title": FAULT_500_TITLE}
    summary = run_queue(workflow, [{"name": "boom"}], tmp_path, [server.url], seed="1", seed_inputs=["1.seed"], settings=FAST)
    reason = summary.failed["boom"]
    assert f"POST {server.url}/prompt answered 500 Internal Server Error" in reason, reason
    assert "restarted?" not in reason and "gave up after 2 attempts" in reason
    assert server.api.alive(), "the server still answers"


def test_a_second_queue_on_the_same_folder_refuses_and_the_first_finishes(server, tmp_path, capsys):
    (tmp_path / "wf.json").write_text(json.dumps(noise_workflow(size=512)))
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"name": f"j{i}"}) + "\n" for i in range(12)))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "comfyui_flowmatch", "queue", str(tmp_path / "wf.json"), "--prompts",
               str(tmp_path / "p.jsonl"), "--out", str(out), "--server", server.url, "--seed-input", "1.seed",
               "--no-progress"]
    first = subprocess.Popen(command, cwd=PACK_ROOT.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / LOCK_FILE_NAME).exists() or not (out / LOCK_FILE_NAME).read_text():
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    code = queue_main(command[4:])
    err = capsys.readouterr().err.strip()
    assert code == 2 and f"is in use by another queue run (pid {first.pid}" in err and len(err.splitlines()) == 1, err
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert "done 12, failed 0" in stdout
    assert len([name for name in files(out) if name.endswith(".png")]) == 12


def limit_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_stops_the_batch_cleanly_and_a_rerun_collects_the_job(server, tmp_path):
    """RLIMIT_FSIZE makes every write past 48 KiB fail (EFBIG), as a full disk does; a 256x256 noise PNG is ~190 KiB."""
    (tmp_path / "wf.json").write_text(json.dumps(noise_workflow(size=256)))
    (tmp_path / "p.jsonl").write_text(json.dumps({"name": "big"}) + "\n")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "comfyui_flowmatch", "queue", str(tmp_path / "wf.json"), "--prompts",
               str(tmp_path / "p.jsonl"), "--out", str(out), "--server", server.url, "--seed", "5",
               "--seed-input", "1.seed", "--no-progress"]
    full = subprocess.run(command, cwd=PACK_ROOT.parent, capture_output=True, text=True, timeout=300,
                          preexec_fn=limit_file_size(48 * 1024))
    assert full.returncode == 1, full.stderr
    assert "stopped early: cannot write in" in full.stdout and "rerun the same command" in full.stdout, full.stdout
    assert "Traceback" not in full.stderr
    assert files(out) == sorted([LOCK_FILE_NAME, "queue-state.jsonl"]), "no image, no sidecar, no .part"
    state = StateFile(out)
    state.close()
    assert state.records["big"].status == "submitted"
    rerun = subprocess.run(command, cwd=PACK_ROOT.parent, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and "done 1, failed 0" in rerun.stdout, rerun.stdout + rerun.stderr
    assert (out / "big-5.png").stat().st_size > 48 * 1024
    history = server.get_json("/history?max_items=1000")
    runs = [entry for entry in history.values() if entry["prompt"][2]["1"]["inputs"]["size"] == 256]
    assert len(runs) == 1, "the rerun collected the queued job instead of running it again"


def test_no_server_answering_is_one_line_naming_the_url(tmp_path, capsys):
    (tmp_path / "wf.json").write_text(json.dumps(noise_workflow()))
    (tmp_path / "p.txt").write_text("red\n")
    url = f"http://127.0.0.1:{free_port()}"
    code = queue_main([str(tmp_path / "wf.json"), "--prompts", str(tmp_path / "p.txt"), "--out", str(tmp_path / "out"),
                       "--server", url])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and url in err and "Is ComfyUI running there?" in err, err


def test_a_server_url_with_a_wrong_path_names_the_path_and_status(server, tmp_path, capsys):
    (tmp_path / "wf.json").write_text(json.dumps(noise_workflow()))
    (tmp_path / "p.txt").write_text("red\n")
    code = queue_main([str(tmp_path / "wf.json"), "--prompts", str(tmp_path / "p.txt"), "--out", str(tmp_path / "out"),
                       "--server", server.url + "/comfy"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and f"{server.url}/comfy/object_info answered 404" in err, err
