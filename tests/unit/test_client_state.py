"""The state journal: folding, a torn last line, compaction, and its report of a batch."""

from __future__ import annotations

import json

import pytest

from comfyui_flowmatch.client.state import STATE_FILE_NAME, StateFile

pytestmark = pytest.mark.unit


def test_events_fold_into_records_and_survive_reopening(tmp_path):
    state = StateFile(tmp_path)
    assert state.submitted("0001", "fp1", "id-a", "http://s1") == 1
    state.lost("0001", "id-a", "http://s1", "server restarted")
    assert state.submitted("0001", "fp1", "id-b", "http://s2") == 2
    state.done("0001", "fp1", "id-b", "http://s2", ["0001-5.png"])
    state.submitted("0002", "fp2", "id-c", "http://s1")
    state.failed("0003", "fp3", "server rejected the prompt: ...")
    state.close()
    lines = (tmp_path / STATE_FILE_NAME).read_text().splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["submitted", "lost", "submitted", "done", "submitted", "failed"]
    reopened = StateFile(tmp_path)
    reopened.close()
    first = reopened.records["0001"]
    assert (first.status, first.prompt_id, first.server, first.images) == ("done", "id-b", "http://s2", ["0001-5.png"])
    assert [a.get("lost") for a in first.attempts] == ["server restarted", None]
    assert reopened.records["0002"].status == "submitted" and reopened.records["0003"].status == "failed"
    compacted = [json.loads(line) for line in (tmp_path / STATE_FILE_NAME).read_text().splitlines()]
    assert [event["event"] for event in compacted] == ["record"] * 3


def test_a_torn_last_line_is_ignored_but_a_broken_middle_is_an_error(tmp_path):
    state = StateFile(tmp_path)
    state.submitted("0001", "fp", "id-a", "http://s1")
    state.close()
    path = tmp_path / STATE_FILE_NAME
    path.write_text(path.read_text() + '{"event": "done", "job": "00')
    reopened = StateFile(tmp_path)
    reopened.close()
    assert reopened.records["0001"].status == "submitted"
    path.write_text("garbage\n" + path.read_text())
    with pytest.raises(ValueError, match="line 1 is not a state event"):
        StateFile(tmp_path)
