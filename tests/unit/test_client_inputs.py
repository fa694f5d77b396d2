"""The batch client's inputs, checked before any server is asked: files, cells, URLs, seeds, outputs, the folder lock.

Server-side faults (500 answers, a server file named like a sidecar, a full disk during a
real batch, a second `queue` on the same folder) are in tests/integration/test_client_faults.py.
"""

from __future__ import annotations

import os
import resource
import signal

import pytest

from comfyui_flowmatch.client.api import ComfyAPI, ServerError, check_url
from comfyui_flowmatch.client.batch import load_workflow, run_queue
from comfyui_flowmatch.client.cli import main as queue_main
from comfyui_flowmatch.client.folder_lock import LOCK_FILE_NAME, FolderBusy
from comfyui_flowmatch.client.jobs import Job, plan_jobs
from comfyui_flowmatch.client.local_server import server_environment
from comfyui_flowmatch.client.outputs import image_names, write_atomic
from comfyui_flowmatch.client.rows import Row, read_rows
from comfyui_flowmatch.client.state import StateFile

pytestmark = pytest.mark.unit

NEVER_CONTACTED = "http://127.0.0.1:9"  # the discard port: a check that contacted it would fail differently
OBJECT_INFO = {
    "CLIPTextEncode": {"input": {"required": {"text": ["STRING", {}], "clip": ["CLIP"]}}},
    "KSampler": {"input": {"required": {
        "model": ["MODEL"], "seed": ["INT", {"min": 0, "max": 2**64 - 1}], "steps": ["INT", {"min": 1, "max": 10000}],
        "positive": ["CONDITIONING"]}}},
}
WORKFLOW = {
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "the workflow's prompt", "clip": ["9", 1]}},
    "3": {"class_type": "KSampler", "inputs": {"model": ["9", 0], "seed": 1, "steps": 20, "positive": ["6", 0]}},
    "9": {"class_type": "CLIPTextEncode", "inputs": {"text": "x", "clip": ["9", 0]}},
}


def write(path, text: str | bytes):
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


# --- prompts files -----------------------------------------------------------------------

@pytest.mark.parametrize("name, content, expected", [
    ("missing.csv", None, r"prompts file .*missing.csv: no such file"),
    ("latin1.csv", "prompt\nun carr\xe9 rouge\n".encode("latin-1"), r"latin1.csv line 2 column 8: byte 0xe9 is not UTF-8; save the file as UTF-8"),
    ("bad.jsonl", '{"prompt": "a"}\n{"prompt": "b",}\n', r"bad.jsonl line 2: not JSON"),
    ("list.jsonl", '["a red circle"]\n', r"list.jsonl line 1: expected a JSON object"),
    ("extra.csv", "prompt,steps\nred, 10, 20\n", r"extra.csv line 2: 3 cells but 2 columns; quote cells that contain commas"),
    ("twice.csv", "prompt,steps,prompt\nred,10,blue\n", r"twice.csv line 1: the header repeats the columns \['prompt'\]"),
    ("unnamed.csv", "prompt,,steps\nred,,10\n", r"unnamed.csv line 1: the header has a column without a name"),
    ("empty.csv", "", r"empty.csv: a CSV prompts file needs a header line"),
    ("list.json", '[{"prompt": "a"}]', r"prompts file .*list.json: suffix '.json'; use .txt \(one prompt a line\), .csv"),
    ("prompts", "a red circle\n", r"prompts file .*prompts: no suffix; use .txt"),
])
def test_bad_prompts_files_name_the_file_and_line(tmp_path, name, content, expected):
    path = tmp_path / name
    if content is not None:
        write(path, content)
    with pytest.raises(ValueError, match=expected):
        read_rows(path)


def test_a_folder_as_prompts_file(tmp_path):
    (tmp_path / "prompts.txt").mkdir()
    with pytest.raises(ValueError, match="prompts.txt is a folder; give a file"):
        read_rows(tmp_path / "prompts.txt")


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    rows = read_rows(write(tmp_path / "bom.csv", "\ufeffprompt,steps\nred,10\n"))
    assert [row.values for row in rows] == [{"prompt": "red", "steps": "10"}]


def test_empty_cells_keep_the_workflows_value_and_empty_rows_are_skipped_by_line(tmp_path, caplog):
    csv_rows = read_rows(write(tmp_path / "p.csv", "prompt,steps,seed\n,30,\nred,  ,7\n,,\n  ,\t,\n"))
    jsonl_rows = read_rows(write(tmp_path / "p.jsonl", '{"prompt": null, "steps": 30}\n{"prompt": ""}\n{}\n{"steps": null}\n'))
    assert [(r.line, r.values) for r in csv_rows] == [(2, {"steps": "30"}), (3, {"prompt": "red", "seed": "7"})]
    assert [(r.line, r.values) for r in jsonl_rows] == [(1, {"steps": 30}), (2, {"prompt": ""})]
    warned = [m for m in caplog.messages if "every cell is empty" in m]
    assert any("p.csv line 4" in m for m in warned) and any("p.csv line 5" in m for m in warned)
    assert any("p.jsonl line 3" in m for m in warned) and any("p.jsonl line 4" in m for m in warned)
    jobs = [job for rows in (csv_rows, jsonl_rows) for job in plan_jobs(WORKFLOW, rows, OBJECT_INFO)[0]]
    texts = [(job.prompt["6"]["inputs"]["text"], job.prompt["3"]["inputs"]["steps"]) for job in jobs]
    # An empty cell (CSV) or null (JSONL) keeps the workflow's value; a JSONL "" is an empty text.
    assert texts == [("the workflow's prompt", 30), ("red", 20), ("the workflow's prompt", 30), ("", 20)]
    assert jobs[1].seed == 7


def test_a_jsonl_empty_string_for_a_number_is_an_invalid_row(tmp_path):
    rows = read_rows(write(tmp_path / "p.jsonl", '{"steps": ""}\n'))
    _, issues = plan_jobs(WORKFLOW, rows, OBJECT_INFO)
    assert [str(issue) for issue in issues] == ["row 1 (line 1), node 3 (KSampler), input 'steps': '' is not a number"]


# --- seeds ---------------------------------------------------------------------------------

def test_derived_seeds_follow_the_row_not_its_position():
    rows = [Row(i, i, {"prompt": p}) for i, p in enumerate(["red", "green", "blue"], 1)]
    before = {job.row.values["prompt"]: job.seed for job in plan_jobs(WORKFLOW, rows, OBJECT_INFO)[0]}
    inserted = [Row(1, 1, {"prompt": "new first row"})] + [Row(r.index + 1, r.line + 1, r.values) for r in rows]
    after = {job.row.values["prompt"]: job.seed for job in plan_jobs(WORKFLOW, inserted, OBJECT_INFO)[0]}
    assert {p: after[p] for p in before} == before
    assert len(set(after.values())) == 4


def test_identical_rows_and_repeats_still_get_distinct_derived_seeds():
    rows = [Row(i, i, {"prompt": "same"}) for i in (1, 2)]
    jobs, _ = plan_jobs(WORKFLOW, rows, OBJECT_INFO, repeat=2)
    assert len({job.seed for job in jobs}) == 4


# --- workflow files and server URLs -----------------------------------------------------------

@pytest.mark.parametrize("content, expected", [
    ('{\n  "3": {"class_type": "KSampler",\n  }\n}', r"workflow .*wf.json line 3 column 3: not valid JSON"),
    ("[1, 2]", r"workflow .*wf.json: a workflow is a non-empty JSON object"),
    ("{}", r"a workflow is a non-empty JSON object"),
    ('{"3": {"class_type": ["KSampler"], "inputs": {}}}', r"nodes \['3'\] have no class_type name or inputs object"),
    ('{"3": {"class_type": "KSampler", "inputs": [1]}}', r"nodes \['3'\] have no class_type name"),
    (b'{"3": {"class_type": "K\xe9"}}', r"wf.json line 1 column 24: byte 0xe9 is not UTF-8"),
])
def test_bad_workflow_files_name_the_file_and_line(tmp_path, content, expected):
    path = write(tmp_path / "wf.json", content)
    with pytest.raises(ValueError, match=expected):
        load_workflow(path, OBJECT_INFO)


def test_a_malformed_ui_workflow_is_named_not_a_traceback(tmp_path):
    path = write(tmp_path / "ui.json", '{"nodes": [5, "x"], "links": []}')
    with pytest.raises(ValueError, match=r"workflow .*ui.json: a malformed UI workflow .* re-save it"):
        load_workflow(path, OBJECT_INFO)


@pytest.mark.parametrize("url", ["127.0.0.1:8188", "localhost", "ftp://host:21", "http://", "http://host:99999",
                                 "http://host:8188/?x=1"])
def test_server_urls_are_checked_before_use(url):
    with pytest.raises(ValueError, match="server .*(base URL|http\\(s\\) URL)"):
        check_url(url)


def test_local_checks_come_before_any_server_is_asked(tmp_path):
    write(tmp_path / "wf.json", "{ not json")
    prompts = write(tmp_path / "p.txt", "red\n")
    with pytest.raises(ValueError, match="wf.json line 1 column 3"):
        run_queue(tmp_path / "wf.json", prompts, tmp_path / "out", [NEVER_CONTACTED])
    with pytest.raises(ValueError, match="p0.txt: no rows"):
        run_queue(WORKFLOW, write(tmp_path / "p0.txt", "# only a comment\n\n"), tmp_path / "out", [NEVER_CONTACTED])
    assert not (tmp_path / "out").exists()


def test_a_server_error_keeps_the_servers_status_and_message():
    error = ServerError("POST http://h:1/prompt", 500, "Server got itself in trouble")
    assert str(error) == "POST http://h:1/prompt answered 500 Internal Server Error: Server got itself in trouble"


# --- the queue command line -----------------------------------------------------------------

@pytest.mark.parametrize("args, expected", [
    ({"--repeat": "0"}, "--repeat: 0 is outside"),
    ({"--depth": "0"}, "--depth: 0 is outside"),
    ({"--grace": "-1"}, "--grace: -1 must be >= 0"),
    ({"--grace": "nan"}, "'nan' is not a finite number"),
    ({"--seed": "5-3"}, "seed range 5-3 is empty"),
    ({"--seed": "lucky"}, "use a number (fixed), FIRST-LAST (a range) or 'derived'"),
    ({"--server": "localhost:8188"}, "server 'localhost:8188' is not an http(s) URL"),
    ({"--prompts": "nowhere.txt"}, "prompts file nowhere.txt: no such file"),
    ({"--out": "a_file"}, "output folder a_file is a file"),
])
def test_queue_cli_refuses_bad_arguments_with_one_line(args, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "wf.json", '{"1": {"class_type": "SaveImage", "inputs": {}}}')
    write(tmp_path / "p.txt", "red\n")
    write(tmp_path / "a_file", "x")
    options = {"--prompts": "p.txt", "--out": "out", "--server": NEVER_CONTACTED, **args}
    try:
        code = queue_main(["wf.json", *(item for pair in options.items() for item in pair)])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err and expected in err, err


# --- outputs and the folder --------------------------------------------------------------------

JOB = Job("0001", Row(1, 1, {}), 0, 5, {})


@pytest.mark.parametrize("filename", ["x.json", "queue-state.jsonl", "notes.txt", "x.png.json", "run.sh"])
def test_server_files_that_are_not_media_are_refused_by_name(filename):
    with pytest.raises(ValueError, match=f"the server saved '{filename}'; the client only saves images and videos"):
        image_names(JOB, [{"filename": filename}])


def test_media_suffixes_are_kept_and_never_json():
    names = image_names(JOB, [{"filename": "a.PNG"}, {"filename": "b.webp"}, {"filename": "c"}, {"filename": "d.mp4"}])
    assert names == ["0001-5_1.png", "0001-5_2.webp", "0001-5_3.png", "0001-5_4.mp4"]


def test_a_failing_write_keeps_the_old_file_and_leaves_no_part(tmp_path):
    target = write(tmp_path / "0001-5.png", b"old image")
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    previous = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, previous[1]))
    try:
        with pytest.raises(OSError):
            write_atomic(target, b"\x89PNG" + b"\x00" * 100_000)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, previous)
        signal.signal(signal.SIGXFSZ, previous_handler)
    assert target.read_bytes() == b"old image"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0001-5.png"]


def test_one_writer_per_output_folder(tmp_path):
    first = StateFile(tmp_path)
    with pytest.raises(FolderBusy, match=rf"{tmp_path} is in use by another queue run \(pid {os.getpid()}, since .*\); wait"):
        StateFile(tmp_path)
    first.close()
    StateFile(tmp_path).close()  # released on close
    assert (tmp_path / LOCK_FILE_NAME).exists()


def test_a_damaged_state_file_releases_the_lock_and_says_what_to_do(tmp_path):
    write(tmp_path / "queue-state.jsonl", b"\xff\xfe not a journal\n")
    with pytest.raises(ValueError, match="is not a state file .* move it away"):
        StateFile(tmp_path)
    write(tmp_path / "queue-state.jsonl", "")
    StateFile(tmp_path).close()


def test_the_client_refuses_unknown_api_url_shapes_early():
    with pytest.raises(ValueError, match="not an http"):
        ComfyAPI("127.0.0.1:8188")


def test_servers_the_pack_starts_do_not_spin_idle_threads():
    assert server_environment({"PATH": "/bin"})["OMP_WAIT_POLICY"] == "PASSIVE"
    assert server_environment({"OMP_WAIT_POLICY": "ACTIVE"})["OMP_WAIT_POLICY"] == "ACTIVE", "an explicit choice wins"
