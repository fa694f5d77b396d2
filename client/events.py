"""One websocket per server: ComfyUI's progress events, pushed onto the runner's queue.

The listener reconnects with backoff for as long as it runs. It reports
``(url, "connected", bool)`` on every connect and drop (a reconnect may mean the server
restarted, so the runner re-checks that server's jobs) and ``(url, "message", dict)`` for
each JSON frame. Binary frames (previews) are ignored. Events only speed things up:
/history stays the truth, and polling takes over while the socket is down.
"""

from __future__ import annotations

import json
import logging
import queue
import threading

import websocket

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 4.0


class ServerEvents(threading.Thread):
    """Daemon thread reading ``ws_url?clientId=client_id`` into `inbox`."""

    def __init__(self, url: str, ws_url: str, client_id: str, inbox: "queue.Queue[tuple[str, str, object]]"):
        super().__init__(name=f"comfy-ws {url}", daemon=True)
        self.url = url
        self.address = f"{ws_url}?clientId={client_id}"
        self.inbox = inbox
        self._stopping = threading.Event()
        self._socket: websocket.WebSocket | None = None

    def stop(self) -> None:
        """Close the socket and end the thread (returns at once)."""
        self._stopping.set()
        sock = self._socket
        if sock is not None:
            try:
                sock.close()
            except (OSError, websocket.WebSocketException):
                pass

    def run(self) -> None:
        delay = 0.25
        while not self._stopping.is_set():
            try:
                self._socket = websocket.create_connection(self.address, timeout=5)
                self._socket.settimeout(None)
            except (OSError, websocket.WebSocketException) as error:
                log.debug("websocket %s: %s", self.address, error)
                self._stopping.wait(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
                continue
            delay = 0.25
            self.inbox.put((self.url, "connected", True))
            self._read()
            self.inbox.put((self.url, "connected", False))

    def _read(self) -> None:
        while not self._stopping.is_set():
            try:
                frame = self._socket.recv()
            except (OSError, websocket.WebSocketException, ValueError):
                return
            if isinstance(frame, str) and frame:
                try:
                    self.inbox.put((self.url, "message", json.loads(frame)))
                except ValueError:
                    log.debug("websocket %s: not JSON: %.80s", self.url, frame)
            elif frame in ("", b""):
                return
