"""Shared fixtures: a real ComfyUI server with the pack installed, on a free loopback port.

`comfy_server` is one session-wide server; `start_comfy_server` starts more (several
servers, kill/restart scenarios). The process handling lives in the pack
(`comfyui_flowmatch.client.local_server.LocalComfyUI`): each server gets its own
temporary base directory and an in-memory database, so servers never share state.
This file only turns start errors into test failures and adds `run_prompt`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from comfyui_flowmatch.client.local_server import LocalComfyUI, LocalComfyUIError, free_port


class ComfyServer(LocalComfyUI):
    """`LocalComfyUI` whose start errors fail the test, plus a run-one-prompt helper."""

    def start(self) -> "ComfyServer":
        try:
            return super().start()
        except LocalComfyUIError as error:
            pytest.fail(str(error))

    def run_prompt(self, prompt: dict, timeout: float = 300, **extra) -> dict:
        """Queue an API-format prompt and wait for its /history entry (the truth)."""
        status, body = self.post_json("/prompt", {"prompt": prompt, **extra})
        if status != 200:
            raise AssertionError(f"/prompt answered {status}: {json.dumps(body, indent=1)}")
        prompt_id = body["prompt_id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.api.history(prompt_id)
            if entry and entry["status"]["status_str"] in ("success", "error") and entry["status"].get("completed") is not None:
                return entry
            time.sleep(0.2)
        raise AssertionError(f"prompt {prompt_id} did not finish within {timeout} s:\n{self.log()[-5000:]}")


@pytest.fixture(scope="session")
def start_comfy_server(tmp_path_factory):
    """Factory: `start_comfy_server(*extra_args, with_pack=True, **options)` -> a running ComfyServer,
    stopped at session end.

    `with_pack=False` gives plain ComfyUI (built-in nodes only), for tests of the client;
    `options` are more `LocalComfyUI` fields (`base_dir`, `pack_folder`).
    """
    servers: list[ComfyServer] = []

    def start(*extra_args: str, with_pack: bool = True, **options) -> ComfyServer:
        options.setdefault("base_dir", tmp_path_factory.mktemp("comfy"))
        server = ComfyServer(port=free_port(), extra_args=extra_args, with_pack=with_pack, **options)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def comfy_server(start_comfy_server) -> ComfyServer:
    """The suite's shared ComfyUI server, with latent previews on."""
    return start_comfy_server("--preview-method", "latent2rgb")


@pytest.fixture(scope="session")
def copy_pack_files():
    """`copy_pack_files(destination)`: the pack's files as a clone of this working tree has them
    (tracked and new files, nothing git ignores), copied into `destination`."""
    repo_root = Path(__file__).resolve().parent.parent

    def copy(destination: Path) -> Path:
        listing = subprocess.run(
            ["git", "-C", str(repo_root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True, check=True,
        ).stdout.decode().split("\0")
        for name in filter(None, listing):
            source = repo_root / name
            if source.is_file():
                (destination / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, destination / name)
        return destination

    return copy
