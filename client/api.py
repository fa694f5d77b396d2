"""One ComfyUI server's HTTP API, as the batch client uses it (stdlib only).

Two failures matter to callers and are told apart here:
`ServerUnavailable` (connection refused/reset, timeouts, 5xx: worth retrying later) and
`PromptRejected` (a 400 from POST /prompt: the prompt is wrong, never retry it).
"""

from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class ServerUnavailable(ConnectionError):
    """The server did not answer, or answered with a 5xx."""


class ServerError(ServerUnavailable):
    """The server answered with a 5xx: `status` and `message` are its own (the body, shortened)."""

    def __init__(self, url: str, status: int, message: str):
        self.status, self.message = status, message
        super().__init__(f"{url} answered {status} {http.client.responses.get(status, '')}: {message}".replace(" :", ":"))


class PromptRejected(ValueError):
    """POST /prompt answered 400: `error` and `node_errors` are ComfyUI's validation report."""

    def __init__(self, error: dict | str, node_errors: dict[str, Any]):
        self.error = error if isinstance(error, dict) else {"type": "invalid_prompt", "message": str(error)}
        self.node_errors = node_errors or {}
        super().__init__(self.error.get("message", "prompt rejected"))


def check_url(url: str) -> str:
    """`url` if it is an http(s) URL with a host.

    Raises:
        ValueError: names the URL and shows the expected shape.
    """
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    try:
        port_ok = parts is not None and (parts.port is None or 0 < parts.port < 65536)
    except ValueError:
        port_ok = False
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise ValueError(f"server {url!r} is not an http(s) URL with a host; use e.g. http://127.0.0.1:8188")
    if parts.query or parts.fragment:
        raise ValueError(f"server {url!r}: give the server's base URL, without ?query or #fragment")
    return url


class ComfyAPI:
    """JSON over HTTP to one ComfyUI server at `url` (e.g. ``http://127.0.0.1:8188``)."""

    def __init__(self, url: str, timeout: float = 30.0):
        self.url = check_url(url).rstrip("/")
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"ComfyAPI({self.url!r})"

    @property
    def ws_url(self) -> str:
        """The websocket endpoint (without the clientId query)."""
        scheme, rest = self.url.split("://", 1)
        return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/ws"

    def request(
        self, method: str, path: str, body: Any = None, timeout: float | None = None, raise_5xx: bool = True
    ) -> tuple[int, Any]:
        """Send one request; returns (status, parsed JSON or text) for 2xx and 4xx answers (and 5xx if not `raise_5xx`).

        Raises:
            ServerUnavailable: no answer (refused, reset, timeout), or a 5xx answer when `raise_5xx`.
        """
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                return response.status, _parse(response.read())
        except urllib.error.HTTPError as error:
            payload = _parse(error.read())
            if error.code >= 500 and raise_5xx:
                raise ServerError(f"{method} {self.url}{path}", error.code, _shorten(payload)) from error
            return error.code, payload
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            raise ServerUnavailable(f"{self.url}{path}: {getattr(error, 'reason', error)}") from error

    def get_json(self, path: str, timeout: float | None = None) -> Any:
        """GET a JSON route; a 4xx answer raises ValueError naming the path, a body that is not JSON ServerUnavailable."""
        status, payload = self.request("GET", path, timeout=timeout)
        if status >= 400:
            raise ValueError(f"GET {self.url}{path} answered {status}: {_shorten(payload)}")
        if isinstance(payload, str):
            raise ServerUnavailable(f"GET {self.url}{path} answered {status} without JSON (cut short?): {payload[:200]}")
        return payload

    def post_json(self, path: str, body: Any, timeout: float | None = None) -> tuple[int, Any]:
        """POST JSON; returns (status, parsed body), also for 4xx answers."""
        return self.request("POST", path, body, timeout=timeout)

    def submit(self, prompt: dict, prompt_id: str, client_id: str, extra_data: dict | None = None) -> dict:
        """POST /prompt with a client-chosen `prompt_id`; returns ComfyUI's answer.

        Raises:
            PromptRejected: a 400 (validation) answer, with its `node_errors`.
            ServerUnavailable: no answer or a 5xx; the prompt may or may not be queued.
        """
        body = {"prompt": prompt, "prompt_id": prompt_id, "client_id": client_id, "extra_data": extra_data or {}}
        status, payload = self.post_json("/prompt", body)
        if status == 200:
            return payload
        if isinstance(payload, dict):
            raise PromptRejected(payload.get("error", f"HTTP {status}"), payload.get("node_errors", {}))
        raise PromptRejected(f"POST {self.url}/prompt answered {status}: {_shorten(payload)}", {})

    def history(self, prompt_id: str) -> dict | None:
        """The /history entry of `prompt_id`, or None while it is not finished (or unknown)."""
        return self.get_json(f"/history/{urllib.parse.quote(prompt_id)}").get(prompt_id)

    def queued_ids(self) -> set[str]:
        """Prompt ids running or pending on the server."""
        queue = self.get_json("/queue")
        return {item[1] for key in ("queue_running", "queue_pending") for item in queue.get(key, [])}

    def object_info(self) -> dict[str, dict]:
        """Every node type the server knows, with its inputs (GET /object_info)."""
        return self.get_json("/object_info", timeout=max(self.timeout, 60))

    def view(self, filename: str, subfolder: str = "", folder_type: str = "output") -> bytes:
        """The bytes of one output file exactly as ComfyUI wrote it (PNG text chunks included)."""
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": folder_type})
        try:
            with urllib.request.urlopen(f"{self.url}/view?{query}", timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            if error.code >= 500:
                raise ServerError(f"GET {self.url}/view {filename}", error.code, _shorten(_parse(error.read()))) from error
            raise ValueError(f"{self.url}/view?{query} answered {error.code}") from error
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            raise ServerUnavailable(f"{self.url}/view {filename}: {getattr(error, 'reason', error)}") from error

    def alive(self, timeout: float = 3.0) -> bool:
        """Whether GET /system_stats answers now."""
        try:
            self.get_json("/system_stats", timeout=timeout)
            return True
        except (ServerUnavailable, ValueError):
            return False


def with_retries(call: Callable[[], T], attempts: int = 3, first_delay: float = 0.2) -> T:
    """`call()`, retried with exponential backoff while it raises ServerUnavailable."""
    delay = first_delay
    for attempt in range(1, attempts):
        try:
            return call()
        except ServerUnavailable as error:
            log.debug("attempt %d failed (%s); retrying in %.1f s", attempt, error, delay)
            time.sleep(delay)
            delay *= 2
    return call()


def _shorten(payload: Any, limit: int = 300) -> str:
    """A server's error body as one short line (JSON error messages unwrapped)."""
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        payload = payload["error"].get("message") or payload["error"]
    text = " ".join(str(payload if payload is not None else "(empty body)").split())
    return text if len(text) <= limit else text[:limit] + "..."


def _parse(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")
