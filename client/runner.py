"""Run planned jobs on one or more ComfyUI servers: nothing lost, nothing twice.

The rules, in the order the loop applies them:
- /history is the truth. A job is finished when its entry exists: ``status_str`` is read
  first (``error`` fails the job with ComfyUI's message), then ``completed``.
- Each attempt gets a client-chosen ``prompt_id`` that is written to the state file
  before the POST. An attempt is lost only when its server answers but has the id in
  neither /queue nor /history, twice `confirm_s` apart (a restarted server, or a POST
  that never arrived); only then is the job submitted again, with a new id.
- A 400 answer fails the job with its `node_errors` and is never retried. Connection
  errors and 5xx mark the server down; it is probed with backoff and its jobs are
  re-checked when it answers again. A server down for `grace_s` has its jobs moved to
  live servers, and ids we moved away are deleted from its queue if it comes back.
- Jobs go to the live server with the fewest jobs queued, at most `depth` per server.
- One websocket per server speeds things up (job done, steps); while it is down the
  loop polls every `poll_s`, and while it is up it still audits every `audit_s`.
"""

from __future__ import annotations

import collections
import logging
import queue
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from .api import ComfyAPI, PromptRejected, ServerError, ServerUnavailable, with_retries
from .events import ServerEvents
from .issues import issues_from_node_errors
from .jobs import Job
from .outputs import output_images, save_outputs
from .state import StateFile
from .summary import Summary

log = logging.getLogger(__name__)

MAX_PROBE_INTERVAL_S = 4.0


@dataclass(frozen=True)
class QueueSettings:
    """How the runner paces itself; the defaults suit one to a few local or LAN servers."""

    depth: int = 2
    grace_s: float = 10.0
    audit_s: float = 5.0
    poll_s: float = 0.5
    confirm_s: float = 1.0
    max_attempts: int = 5
    give_up_s: float = 600.0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.depth < 1 or self.max_attempts < 1:
            raise ValueError(f"depth and max_attempts must be >= 1, got {self.depth} and {self.max_attempts}")


@dataclass(eq=False)
class Attempt:
    """One submission of a job to a server under one prompt id."""

    job: Job
    prompt_id: str
    server: "Server"
    number: int
    submitted_at: float
    missing_since: float | None = None
    error: str | None = None


@dataclass(eq=False)
class Server:
    """The runner's view of one server: reachability, its in-flight attempts, its socket."""

    api: ComfyAPI
    in_flight: dict[str, Attempt] = field(default_factory=dict)
    abandoned: set[str] = field(default_factory=set)
    down_since: float | None = None
    next_probe: float = 0.0
    probe_interval: float = 0.5
    next_audit: float = 0.0
    socket_up: bool = False
    queue_remaining: int = 0

    @property
    def url(self) -> str:
        return self.api.url

    @property
    def live(self) -> bool:
        return self.down_since is None

    @property
    def load(self) -> int:
        return max(len(self.in_flight), self.queue_remaining)

    def mark_down(self, error: Exception) -> None:
        if self.live:
            log.warning("server %s unreachable: %s", self.url, error)
            self.down_since = time.monotonic()
            self.next_probe = self.down_since + self.probe_interval


class BatchRunner:
    """Runs `jobs` on `servers`, writing images and sidecars to `out_dir` and events to `state`."""

    def __init__(
        self,
        jobs: list[Job],
        servers: list[str],
        out_dir: Path,
        state: StateFile,
        settings: QueueSettings = QueueSettings(),
        extra_data: dict[str, Any] | None = None,
        prepare: Callable[[Job, ComfyAPI], None] | None = None,
    ):
        """`prepare(job, api)` runs before each submission (e.g. uploads the job's input image);
        ServerUnavailable from it marks the server down and the job waits for another one."""
        if not servers:
            raise ValueError("give at least one server URL")
        self.jobs = jobs
        self.servers = [Server(ComfyAPI(url)) for url in dict.fromkeys(servers)]
        self.out_dir = Path(out_dir)
        self.state = state
        self.settings = settings
        self.extra_data = extra_data or {}
        self.prepare = prepare
        # Stable per output folder, so a resumed batch still hears about the jobs it queued before.
        self.client_id = f"flowmatch-queue-{uuid.uuid5(uuid.NAMESPACE_URL, str(self.out_dir.resolve())).hex[:12]}"
        self.pending: collections.deque[Job] = collections.deque()
        self.attempts: dict[str, Attempt] = {}
        self.inbox: queue.Queue = queue.Queue()
        self.summary = Summary(total=len(jobs))
        self.bar: tqdm | None = None

    def run(self) -> Summary:
        """Run until every job is done or failed; Ctrl-C stops at once, leaving a resumable state."""
        started = time.monotonic()
        self._resume()
        for server in self.servers:
            if not server.api.alive():
                server.mark_down(ServerUnavailable("it does not answer /system_stats"))
        listeners = [ServerEvents(s.url, s.api.ws_url, self.client_id, self.inbox) for s in self.servers]
        for listener in listeners:
            listener.start()
        self.bar = tqdm(total=len(self.jobs), initial=self.summary.skipped, unit="job", disable=not self.settings.progress)
        try:
            while (self.pending or self.attempts) and not self.summary.stopped:
                self._step()
        except KeyboardInterrupt:
            self.summary.stopped = f"interrupted with {len(self.attempts)} jobs queued on servers"
        except OSError as error:
            # A full disk or a lost permission: stop cleanly; the journal still knows every queued job.
            log.error("cannot write in %s: %s", self.out_dir, error)
            self.summary.stopped = (f"cannot write in {self.out_dir} ({error}); free space or fix permissions, "
                                    f"then rerun the same command to collect the {len(self.attempts)} queued jobs")
        finally:
            for listener in listeners:
                listener.stop()
            self.bar.close()
            self.summary.elapsed_s = time.monotonic() - started
        return self.summary

    def _resume(self) -> None:
        """Skip jobs the state file shows finished; adopt the ones still queued on a known server."""
        by_url = {server.url: server for server in self.servers}
        for job in self.jobs:
            record = self.state.records.get(job.key)
            same = record is not None and record.fingerprint == job.fingerprint
            if same and record.status == "done" and all((self.out_dir / name).exists() for name in record.images):
                self.summary.skipped += 1
                continue
            if same and record.status == "submitted" and record.server in by_url:
                server = by_url[record.server]
                attempt = Attempt(job, record.prompt_id, server, len(record.attempts), record.attempts[-1]["time"])
                server.in_flight[attempt.prompt_id] = self.attempts[attempt.prompt_id] = attempt
                continue
            if record is not None and record.status == "submitted":
                if record.server in by_url:
                    by_url[record.server].abandoned.add(record.prompt_id)  # changed job: drop the old one if still queued
                self.state.lost(job.key, record.prompt_id, record.server, "its server is not in this run, or the job changed")
            self.pending.append(job)

    def _step(self) -> None:
        can_submit = bool(self.pending) and any(s.live and len(s.in_flight) < self.settings.depth for s in self.servers)
        self._drain_events(timeout=0 if can_submit else 0.1)
        now = time.monotonic()
        for server in self.servers:
            if not server.live and now >= server.next_probe:
                self._probe(server, now)
            if server.live and now >= server.next_audit:
                self._guard(server, self._audit, server)
            if not server.live and now - server.down_since >= self.settings.grace_s:
                self._evacuate(server, now)
        self._submit_ready()
        if all(not s.live for s in self.servers):
            down_for = now - max(s.down_since for s in self.servers)
            if down_for > self.settings.give_up_s:
                self.summary.stopped = f"no server answered for {down_for:.0f} s"

    def _guard(self, server: Server, call: Callable[..., Any], *args: Any) -> Any:
        """Run `call(*args)`; a ServerUnavailable marks `server` down instead of propagating."""
        try:
            return call(*args)
        except ServerUnavailable as error:
            server.mark_down(error)
            return None

    def _drain_events(self, timeout: float) -> None:
        try:
            item = self.inbox.get(timeout=timeout) if timeout > 0 else self.inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            self._on_event(*item)
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return

    def _on_event(self, url: str, kind: str, payload: Any) -> None:
        server = next(s for s in self.servers if s.url == url)
        if kind == "connected":
            server.socket_up = payload
            server.next_audit = 0.0  # a reconnect may be a restarted server: check its jobs now
            return
        event, data = payload.get("type"), payload.get("data") or {}
        if event == "status":
            server.queue_remaining = ((data.get("status") or {}).get("exec_info") or {}).get("queue_remaining", 0)
            return
        attempt = self.attempts.get(data.get("prompt_id"))
        if attempt is None:
            return
        if event == "progress" and self.bar is not None:
            self.bar.set_postfix_str(f"{attempt.job.key} step {data.get('value')}/{data.get('max')}", refresh=False)
        elif event == "executing" and data.get("node") is None:
            self._guard(server, self._collect, attempt)

    def _probe(self, server: Server, now: float) -> None:
        if server.api.alive(timeout=2):
            log.warning("server %s answers again after %.1f s", server.url, now - server.down_since)
            server.down_since, server.probe_interval, server.next_audit = None, 0.5, 0.0
        else:
            server.probe_interval = min(server.probe_interval * 2, MAX_PROBE_INTERVAL_S)
            server.next_probe = now + server.probe_interval

    def _audit(self, server: Server) -> None:
        """Compare the server's queue and history with the attempts we think it holds."""
        now = time.monotonic()
        server.next_audit = now + (self.settings.audit_s if server.socket_up else self.settings.poll_s)
        if not server.in_flight and not server.abandoned:
            return
        queued = server.api.queued_ids()
        stale = server.abandoned & queued
        if stale:
            server.api.post_json("/queue", {"delete": sorted(stale)})
            log.warning("deleted %d jobs this batch no longer tracks from %s's queue", len(stale), server.url)
        server.abandoned.clear()
        for attempt in list(server.in_flight.values()):
            if attempt.prompt_id in queued:
                attempt.missing_since = None
            elif self._collect(attempt):
                continue
            elif attempt.missing_since is None:
                attempt.missing_since = now
                server.next_audit = min(server.next_audit, now + self.settings.confirm_s)
            elif now - attempt.missing_since >= self.settings.confirm_s:
                self._lose(attempt, f"{server.url} has it in neither its queue nor its history ({attempt.error or 'restarted?'})")

    def _collect(self, attempt: Attempt) -> bool:
        """Finish `attempt` if /history has it; returns whether it did."""
        server = attempt.server
        entry = server.api.history(attempt.prompt_id)
        if entry is None:
            return False
        status = entry.get("status") or {}
        if status.get("status_str") == "error":
            self._fail(attempt, f"execution error: {_execution_error(status)}")
        elif status.get("completed"):
            try:
                self._finish(attempt, entry)
            except ValueError as error:
                self._fail(attempt, f"its images were not saved: {error}")
        else:
            self._fail(attempt, f"history says {status.get('status_str')!r} but not completed")
        return True

    def _finish(self, attempt: Attempt, entry: dict) -> None:
        job, server = attempt.job, attempt.server
        images = output_images(entry)
        details = {
            "server": server.url,
            "prompt_id": attempt.prompt_id,
            "attempt": attempt.number,
            "timings": {**_execution_times(entry, attempt.submitted_at), "submitted_at": attempt.submitted_at},
        }

        def fetch(image: dict) -> bytes:
            return with_retries(lambda: server.api.view(image["filename"], image.get("subfolder", ""), "output"))

        names = save_outputs(job, images, fetch, self.out_dir, details)
        if not names:
            log.warning("job %s finished without saving an image (no SaveImage node?)", job.key)
        self.state.done(job.key, job.fingerprint, attempt.prompt_id, server.url, names)
        self._forget(attempt)
        self.summary.done += 1
        self.summary.images += len(names)
        self.bar.update(1)

    def _fail(self, attempt: Attempt, reason: str) -> None:
        job = attempt.job
        log.error("job %s (%s) failed: %s", job.key, job.row.label, reason)
        self.state.failed(job.key, job.fingerprint, reason, attempt.prompt_id, attempt.server.url)
        self._forget(attempt)
        self.summary.failed[job.key] = reason
        self.bar.update(1)

    def _lose(self, attempt: Attempt, reason: str) -> None:
        log.warning("job %s lost (prompt %s): %s", attempt.job.key, attempt.prompt_id, reason)
        self.state.lost(attempt.job.key, attempt.prompt_id, attempt.server.url, reason)
        self._forget(attempt)
        if attempt.number >= self.settings.max_attempts:
            self._fail(attempt, f"gave up after {attempt.number} attempts; last: {reason}")
            return
        self.summary.resubmitted += 1
        self.pending.appendleft(attempt.job)

    def _forget(self, attempt: Attempt) -> None:
        attempt.server.in_flight.pop(attempt.prompt_id, None)
        self.attempts.pop(attempt.prompt_id, None)

    def _evacuate(self, server: Server, now: float) -> None:
        """Move a long-down server's jobs to live servers (if there is one to take them)."""
        if not server.in_flight or not any(s.live for s in self.servers):
            return
        for attempt in list(server.in_flight.values()):
            server.abandoned.add(attempt.prompt_id)
            self._lose(attempt, f"{server.url} unreachable for {now - server.down_since:.0f} s")

    def _submit_ready(self) -> None:
        while self.pending:
            ready = [s for s in self.servers if s.live and len(s.in_flight) < self.settings.depth]
            if not ready:
                return
            server = min(ready, key=lambda s: s.load)
            self._submit(self.pending.popleft(), server)

    def _submit(self, job: Job, server: Server) -> None:
        if self.prepare is not None:
            try:
                self.prepare(job, server.api)
            except ServerUnavailable as error:
                server.mark_down(error)
                self.pending.appendleft(job)
                return
            except (ValueError, OSError) as error:
                log.error("job %s (%s) failed: %s", job.key, job.row.label, error)
                self.state.failed(job.key, job.fingerprint, str(error), None, server.url)
                self.summary.failed[job.key] = str(error)
                self.bar.update(1)
                return
        prompt_id = str(uuid.uuid4())
        number = self.state.submitted(job.key, job.fingerprint, prompt_id, server.url)
        attempt = Attempt(job, prompt_id, server, number, time.time())
        server.in_flight[prompt_id] = self.attempts[prompt_id] = attempt
        try:
            server.api.submit(job.prompt, prompt_id, self.client_id, self.extra_data)
        except PromptRejected as rejected:
            issues = issues_from_node_errors(rejected.node_errors, job.prompt, rejected.error)
            self._fail(attempt, f"server rejected the prompt ({server.url}): " + "; ".join(str(issue) for issue in issues))
        except ServerError as error:
            # It answered, so it is up; whether the prompt got queued anyway is for the audit to see.
            log.warning("job %s: %s", job.key, error)
            attempt.error = str(error)
            server.next_audit = 0.0
        except ServerUnavailable as error:
            # The POST may or may not have arrived: the audit after the server answers again decides.
            server.mark_down(error)
        else:
            server.queue_remaining += 1


def _execution_error(status: dict) -> str:
    for event, data in status.get("messages") or []:
        if event == "execution_error":
            return f"node {data.get('node_id')} ({data.get('node_type')}): {data.get('exception_type')}: {data.get('exception_message')}".strip()
        if event == "execution_interrupted":
            return f"interrupted at node {data.get('node_id')} ({data.get('node_type')})"
    return "unknown (no execution_error message in /history)"


def _execution_times(entry: dict, submitted_at: float) -> dict[str, float]:
    """Seconds waiting in the queue and executing, from the timestamps ComfyUI keeps in /history."""
    stamps = {event: data.get("timestamp") for event, data in (entry.get("status") or {}).get("messages") or []}
    start, end = stamps.get("execution_start"), stamps.get("execution_success")
    times = {"finished_after_s": round(time.time() - submitted_at, 3)}
    if start is not None:
        times["queued_s"] = round(start / 1000 - submitted_at, 3)
    if start is not None and end is not None:
        times["execution_s"] = round((end - start) / 1000, 3)
    return times
