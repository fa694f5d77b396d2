"""How the HTTP layer classifies answers (retryable ServerUnavailable or final PromptRejected)
and which requests it retries itself (idempotent reads only, urllib3 Retry)."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from comfyui_flowmatch.client.api import ComfyAPI, PromptRejected, ServerUnavailable
from comfyui_flowmatch.client.local_server import free_port

pytestmark = pytest.mark.unit

NODE_ERRORS = {"3": {"errors": [{"type": "value_bigger_than_max", "message": "Value bigger than max",
                                 "details": "steps: 99999 > 10000", "extra_info": {"input_name": "steps"}}],
                     "class_type": "KSampler"}}


class ScriptedHandler(http.server.BaseHTTPRequestHandler):
    """Answers by path: /cut (body shorter than announced), /boom, /history and /view (500),
    /object_info (503 twice, then JSON), /text (not JSON), /prompt (400). Counts GETs by path."""

    hits: dict[str, int] = {}

    def log_message(self, *args) -> None:
        pass

    def answer(self, status: int, body: bytes, length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(length if length is not None else len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        route = self.path.split("?")[0].rsplit("/", 1)[0] if self.path.startswith("/history/") else self.path.split("?")[0]
        self.hits[route] = self.hits.get(route, 0) + 1
        if self.path.startswith("/object_info"):
            if self.hits[route] <= 2:
                self.answer(503, b"busy")
            else:
                self.answer(200, b'{"KSampler": {}}')
        elif self.path.startswith(("/boom", "/history", "/view")):
            self.answer(500, b"internal error")
        elif self.path.startswith("/cut"):
            self.answer(200, b'{"partial": ', length=100)
        else:
            self.answer(200, b"<html>not json</html>")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.answer(400, json.dumps({"error": {"type": "prompt_outputs_failed_validation", "message": "failed"},
                                     "node_errors": NODE_ERRORS}).encode())


@pytest.fixture
def scripted():
    ScriptedHandler.hits = {}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ScriptedHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield ComfyAPI(f"http://127.0.0.1:{server.server_address[1]}", timeout=5)
    server.shutdown()


@pytest.mark.parametrize("path", ["/cut", "/boom", "/text"])
def test_cut_short_failed_or_garbled_answers_are_retryable(scripted, path):
    with pytest.raises(ServerUnavailable):
        scripted.get_json(path)


def test_a_refused_connection_is_retryable():
    api = ComfyAPI(f"http://127.0.0.1:{free_port()}", timeout=2)
    assert not api.alive()
    with pytest.raises(ServerUnavailable):
        api.history("x")
    with pytest.raises(ServerUnavailable):
        api.view("x.png")


def test_idempotent_reads_are_retried_and_the_rest_fail_fast(scripted):
    assert scripted.object_info() == {"KSampler": {}}
    with pytest.raises(ServerUnavailable):
        scripted.view("x.png")
    with pytest.raises(ServerUnavailable):
        scripted.history("x")
    assert ScriptedHandler.hits == {"/object_info": 3, "/view": 3, "/history": 1}


def test_a_400_is_a_rejection_with_its_node_errors(scripted):
    with pytest.raises(PromptRejected) as rejected:
        scripted.submit({"3": {"class_type": "KSampler", "inputs": {}}}, "id-1", "client")
    assert rejected.value.node_errors == NODE_ERRORS
    assert rejected.value.error["type"] == "prompt_outputs_failed_validation"
