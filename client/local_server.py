"""A local ComfyUI process with this pack installed: for tests, the demo and benchmarks.

Each `LocalComfyUI` runs ComfyUI's `main.py` on a loopback port from its own base
directory (custom_nodes/ holding only a symlink to this repository, models/, input/,
output/, temp/, user/) with an in-memory database, so servers never share state.
Importing this module never imports torch: whether to pass `--cpu` is asked of a
subprocess (or given).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .api import ComfyAPI

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
PACK_FOLDER_NAME = "comfyui_flowmatch"
IMPORT_FAILURE_MARKERS = ("IMPORT FAILED", "Cannot import")


class LocalComfyUIError(RuntimeError):
    """ComfyUI could not be started, or started without our pack."""


def comfyui_path(explicit: str | Path | None = None) -> Path:
    """The ComfyUI tree to run: `explicit`, else $COMFYUI_PATH, else the one `make setup` extracts."""
    path = Path(explicit or os.environ.get("COMFYUI_PATH") or REPO_ROOT / ".comfyui")
    if not (path / "main.py").is_file():
        raise LocalComfyUIError(f"no ComfyUI tree at {path}: run `make setup` (or set COMFYUI_PATH)")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@functools.cache
def cuda_available(python: str = sys.executable) -> bool:
    """Whether torch in `python`'s environment sees a CUDA device (asked in a subprocess)."""
    probe = subprocess.run(
        [python, "-c", "import torch; print(torch.cuda.is_available())"], capture_output=True, text=True
    )
    return probe.returncode == 0 and probe.stdout.strip() == "True"


def server_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a server starts with: `base` (default os.environ), unbuffered output, and
    ``OMP_WAIT_POLICY=PASSIVE`` unless `base` sets it.

    OpenMP's default lets idle torch threads spin; a server next to a trainer or a second
    server on the same cores then slows both by up to 20x (see docs/benchmarks.md).
    """
    return {"OMP_WAIT_POLICY": "PASSIVE", **(os.environ if base is None else base), "PYTHONUNBUFFERED": "1"}


@dataclass
class LocalComfyUI:
    """A ComfyUI process serving on 127.0.0.1:`port` from `base_dir`.

    Args:
        base_dir: the server's --base-directory; None makes a temporary one, removed by `close()`.
        port: 0 picks a free loopback port.
        extra_args: more ComfyUI arguments (e.g. ``("--preview-method", "latent2rgb")``).
        cpu: pass --cpu; None decides by whether torch sees CUDA.
        comfyui_dir: the ComfyUI tree (see `comfyui_path`).
        start_timeout: seconds to wait for /system_stats.
        with_pack: install this pack (and fail if it does not import); False gives plain ComfyUI.
        pack_folder: the pack's folder name under custom_nodes/ (a symlink to this repository,
            unless that folder already exists, e.g. a clone); any name works.
    """

    base_dir: Path | None = None
    port: int = 0
    extra_args: tuple[str, ...] = ()
    cpu: bool | None = None
    comfyui_dir: Path | None = None
    start_timeout: float = float(os.environ.get("COMFY_START_TIMEOUT", "240"))
    with_pack: bool = True
    pack_folder: str = PACK_FOLDER_NAME
    process: subprocess.Popen | None = field(default=None, repr=False)
    starts: int = 0
    _owns_base_dir: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self.base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="comfyui-"))
            self._owns_base_dir = True
        self.base_dir = Path(self.base_dir)
        self.port = self.port or free_port()
        self.api = ComfyAPI(self.url)

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

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        """The log of the latest start."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def command(self) -> list[str]:
        """The command line that starts this server."""
        cpu = self.cpu if self.cpu is not None else not cuda_available()
        return [
            sys.executable, str(comfyui_path(self.comfyui_dir) / "main.py"),
            *(["--cpu"] if cpu else []),
            "--listen", "127.0.0.1", "--port", str(self.port),
            "--base-directory", str(self.base_dir),
            "--database-url", "sqlite:///:memory:",
            "--disable-auto-launch", "--log-stdout",
            *self.extra_args,
        ]

    def start(self) -> "LocalComfyUI":
        """Start the process and wait until it answers with our pack loaded.

        Raises:
            LocalComfyUIError: the process exited, did not answer in time, or logged an
                import failure of this pack (the log is in the message).
        """
        link = self.base_dir / "custom_nodes" / self.pack_folder
        link.parent.mkdir(parents=True, exist_ok=True)
        if self.with_pack and not link.exists():
            link.symlink_to(REPO_ROOT, target_is_directory=True)
        command = self.command()
        self.starts += 1
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(
                command, cwd=comfyui_path(self.comfyui_dir), stdout=log_file, stderr=subprocess.STDOUT,
                env=server_environment(), start_new_session=True,
            )
        log.info("starting ComfyUI on %s (log: %s)", self.url, self.log_path)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not self.api.alive(timeout=2):
            if self.process.poll() is not None:
                raise LocalComfyUIError(f"ComfyUI exited with {self.process.returncode} while starting:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise LocalComfyUIError(
                    f"ComfyUI did not answer /system_stats within {self.start_timeout:.0f} s:\n{self.log()}"
                )
            time.sleep(0.3)
        failures = self.with_pack and [
            line for line in self.log().splitlines()
            if self.pack_folder in line and any(marker in line for marker in IMPORT_FAILURE_MARKERS)
        ]
        if failures:
            self.stop()
            raise LocalComfyUIError(f"the pack failed to import into ComfyUI ({failures[0]}):\n{self.log()}")

    def get_json(self, path: str, timeout: float = 30) -> Any:
        """GET a JSON route of this server."""
        return self.api.get_json(path, timeout=timeout)

    def post_json(self, path: str, body: Any, timeout: float = 30) -> tuple[int, Any]:
        """POST JSON; returns (status, parsed body) for every HTTP answer, 4xx and 5xx included."""
        return self.api.request("POST", path, body, timeout=timeout, raise_5xx=False)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the process group (SIGKILL after 15 s); idempotent."""
        if not self.running:
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

    def restart(self) -> "LocalComfyUI":
        """Stop and start again on the same port and base directory (the in-memory queue and history are lost)."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop, and remove the base directory if this object created it."""
        self.stop()
        if self._owns_base_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> "LocalComfyUI":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()
