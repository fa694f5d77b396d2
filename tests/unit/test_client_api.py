"""How the HTTP layer classifies answers: retryable (ServerUnavailable) or final (PromptRejected)."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from comfyui_flowmatch.client.api import ComfyAPI, PromptRejected, ServerUnavailable, with_retries
from comfyui_flowmatch.client.local_server import free_port

pytestmark = pytest.mark.unit

NODE_ERRORS = {"3": {"errors": [{"type": "value_bigger_than_max", "message": "Value bigger than max",
                                 "details": "steps: 99999 > 10000", "extra_info": {"input_name": "steps"}}],
                     "class_type": "KSampler"}}


class ScriptedHandler(http.server.BaseHTTPRequestHandler):
    """Answers by path: /cut (body shorter than announced), /boom (500), /text (not JSON), /prompt (400)."""

    def log_message(self, *args) -> None:
        pass

    def answer(self, status: int, body: bytes, length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(length if length is not None else len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.startswith("/cut"):
            self.answer(200, b'{"partial": ', length=100)
        elif self.path.startswith("/boom"):
            self.answer(500, b"internal error")
        else:
            self.answer(200, b"<html>not json</html>")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.answer(400, json.dumps({"error": {"type": "prompt_outputs_failed_validation", "message": "failed"},
                                     "node_errors": NODE_ERRORS}).encode())


@pytest.fixture
def scripted():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ScriptedHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield ComfyAPI(f"http://127.0.0.1:{server.server_address[1]}", timeout=5)
    server.shutdown()


@pytest.mark.parametrize("path", ["/cut", "/boom", "/text"])
def test_cut_short_failed_or_garbled_answers_are_retryable(scripted, path):
    with pytest.raises(ServerUnavailable):
        scripted.get_json(path)


def test_a_refused_connection_is_retryable_and_retried_with_backoff():
    api = ComfyAPI(f"http://127.0.0.1:{free_port()}", timeout=2)
    assert not api.alive()
    calls = []
    with pytest.raises(ServerUnavailable):
        with_retries(lambda: calls.append(1) or api.history("x"), attempts=3, first_delay=0.01)
    assert len(calls) == 3


def test_a_400_is_a_rejection_with_its_node_errors(scripted):
    with pytest.raises(PromptRejected) as rejected:
        scripted.submit({"3": {"class_type": "KSampler", "inputs": {}}}, "id-1", "client")
    assert rejected.value.node_errors == NODE_ERRORS
    assert rejected.value.error["type"] == "prompt_outputs_failed_validation"
