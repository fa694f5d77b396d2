"""Shared fixtures: a real ComfyUI server with the pack installed, on a free loopback port.

`comfy_server` is one session-wide server; `start_comfy_server` starts more (several
servers, kill/restart scenarios). Each server gets its own temporary base directory
(custom_nodes/ holding only this pack, models/, input/, output/, temp/, user/) and an
in-memory database, so servers never share state.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PACK_FOLDER_NAME = "comfyui_flowmatch"
IMPORT_FAILURE_MARKERS = ("IMPORT FAILED", "Cannot import")
START_TIMEOUT_S = float(os.environ.get("COMFY_START_TIMEOUT", "240"))


def comfyui_path() -> Path:
    """The ComfyUI tree under test: $COMFYUI_PATH, else the one `make setup` extracts."""
    path = Path(os.environ.get("COMFYUI_PATH") or REPO_ROOT / ".comfyui")
    if not (path / "main.py").is_file():
        pytest.fail(f"no ComfyUI tree at {path}: run `make setup` (or set COMFYUI_PATH)")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ComfyServer:
    """A ComfyUI process serving on 127.0.0.1:`port` from its own base directory."""

    base_dir: Path
    port: int
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen | None = field(default=None, repr=False)
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.base_dir / f"server-{self.starts}.log"

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    @property
    def models_dir(self) -> Path:
        return self.base_dir / "models"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> "ComfyServer":
        comfy = comfyui_path()
        custom_nodes = self.base_dir / "custom_nodes"
        custom_nodes.mkdir(parents=True, exist_ok=True)
        link = custom_nodes / PACK_FOLDER_NAME
        if not link.exists():
            link.symlink_to(REPO_ROOT, target_is_directory=True)
        self.starts += 1
        cmd = [
            sys.executable, str(comfy / "main.py"),
            "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--base-directory", str(self.base_dir),
            "--database-url", "sqlite:///:memory:",
            "--disable-auto-launch", "--log-stdout",
            *self.extra_args,
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                cmd, cwd=comfy, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"ComfyUI exited with {self.process.returncode} while starting:\n{self.log()}")
            try:
                self.get_json("/system_stats", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.5)
        else:
            self.stop()
            pytest.fail(f"ComfyUI did not answer /system_stats within {START_TIMEOUT_S:.0f} s:\n{self.log()}")
        failures = [
            line for line in self.log().splitlines()
            if PACK_FOLDER_NAME in line and any(marker in line for marker in IMPORT_FAILURE_MARKERS)
        ]
        if failures:
            self.stop()
            pytest.fail(f"the pack failed to import into ComfyUI ({failures[0]}):\n{self.log()}")

    def get_json(self, path: str, timeout: float = 30):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return json.loads(response.read())

    def post_json(self, path: str, body, timeout: float = 30):
        """POST JSON; returns (status, parsed body) also for 4xx answers."""
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as error:
            raw = error.read()
            try:
                return error.code, json.loads(raw)
            except ValueError:
                return error.code, raw.decode(errors="replace")

    def run_prompt(self, prompt: dict, timeout: float = 300, **extra) -> dict:
        """Queue an API-format prompt and wait for its /history entry (the truth)."""
        status, body = self.post_json("/prompt", {"prompt": prompt, **extra})
        if status != 200:
            raise AssertionError(f"/prompt answered {status}: {json.dumps(body, indent=1)}")
        prompt_id = body["prompt_id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get_json(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id]["status"].get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"]["status_str"] in ("success", "error"):
                    return entry
            time.sleep(0.2)
        raise AssertionError(f"prompt {prompt_id} did not finish within {timeout} s:\n{self.log()[-5000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the process group (SIGKILL after 15 s); idempotent."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """Die abruptly, as a crashed server does."""
        self.stop(signal.SIGKILL)

    def restart(self) -> "ComfyServer":
        """Stop and start again on the same port and base directory (in-memory history is lost)."""
        self.stop()
        return self.start()


@pytest.fixture(scope="session")
def start_comfy_server(tmp_path_factory):
    """Factory: `start_comfy_server(*extra_args)` -> a running ComfyServer, stopped at session end."""
    servers: list[ComfyServer] = []

    def start(*extra_args: str) -> ComfyServer:
        server = ComfyServer(base_dir=tmp_path_factory.mktemp("comfy"), port=free_port(), extra_args=extra_args)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def comfy_server(start_comfy_server) -> ComfyServer:
    """The suite's shared ComfyUI server, with latent previews on."""
    return start_comfy_server("--preview-method", "latent2rgb")
