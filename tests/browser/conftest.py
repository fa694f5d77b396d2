"""Browser fixtures: Debian chromium (Playwright) on the real ComfyUI frontend of `comfy_server`.

One browser per session; each test gets a fresh context (empty localStorage, so no
previous workflow is restored) with one page on the server's UI, ready to use
through `ComfyPage`. `comfy_page` is the frontend ComfyUI 0.3.75 pins (1.32.9);
`any_frontend_page` runs a test on that one and on the newest frontend (`make
newest-frontend`, served with --front-end-root). Console errors are collected per page; screenshots land in
artifacts/browser/<test>-<step>.png (ignored by git).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS_DIR = REPO_ROOT / "artifacts" / "browser"
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
NEWEST_FRONTEND_ROOT = REPO_ROOT / ".cache" / "frontend-newest" / "comfyui_frontend_package" / "static"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PACK_MARKERS = ("comfyui_flowmatch", "FlowMatch")
# Requests the frontend makes by design that 404 without anything wrong in the pack: the help panel
# asks for docs/<NodeId>/<locale>.md before our docs/<NodeId>.md.
EXPECTED_404 = re.compile(
    r"^error: Failed to load resource: .* 404 .*/extensions/comfyui_flowmatch/docs/\w+/[\w-]+\.md\]$"
)
# The Missing Models dialog asks the model hosts for each download's size; offline, that fetch fails.
OFFLINE_FETCH = "Error fetching file size: TypeError: Failed to fetch"
# A new user gets the templates dialog and tours on first load; the suite opens what it tests itself.
FRONTEND_SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Minimap.Visible": False,
    "LiteGraph.Node.TooltipDelay": 50,
    "LiteGraph.Canvas.LowQualityRenderingZoomThreshold": 0.2,  # readable screenshots of whole graphs
}
APP_READY = "() => !!(window.app && window.app.graph && window.app.canvas && window.app.extensionManager)"

# Installed once per page: execution errors the server reports over the websocket.
PAGE_SETUP = """() => {
  window.__fm = {executionErrors: []};
  window.app.api.addEventListener('execution_error', (e) => window.__fm.executionErrors.push(e.detail));
}"""
# Each node's widgets by name: what a user sees, as opposed to the positional widgets_values.
WIDGETS_BY_NODE = """() => Object.fromEntries(window.app.graph.nodes.map((n) => [n.id, {
  type: n.type,
  registered: n.type in LiteGraph.registered_node_types,
  widgets: Object.fromEntries((n.widgets || []).map((w) => [w.name, {
    value: w.value, options: w.options && Array.isArray(w.options.values) ? w.options.values : null}])),
}]))"""
IMAGE_SHOWN = """(nodeId) => {
  const node = window.app.graph.getNodeById(nodeId);
  const imgs = (node && node.imgs) || [];
  if (window.__fm.executionErrors.length) return {error: window.__fm.executionErrors};
  const dialog = [...document.querySelectorAll('[role=dialog]')].find((d) => d.offsetParent !== null);
  if (dialog) return {error: dialog.innerText};  // e.g. the prompt failed validation
  if (imgs.length && imgs.every((i) => i.complete && i.naturalWidth > 0))
    return {srcs: imgs.map((i) => i.src), sizes: imgs.map((i) => [i.naturalWidth, i.naturalHeight])};
  return null;
}"""


@dataclass
class LoadReport:
    """What the frontend said while loading one workflow."""

    dialogs: list[str]
    console_errors: list[str]
    nodes: dict[str, dict]

    @property
    def unregistered(self) -> list[str]:
        return sorted(node["type"] for node in self.nodes.values() if not node["registered"])


@dataclass
class ComfyPage:
    """One page of the ComfyUI frontend, with the handful of actions the tests need."""

    page: object
    server: object
    name: str
    console: list[tuple[str, str, str]] = field(default_factory=list)

    def open(self) -> "ComfyPage":
        self.page.on("console", lambda m: self.console.append((m.type, m.text, m.location.get("url", ""))))
        self.page.on("pageerror", lambda e: self.console.append(("pageerror", f"{e}\n{e.stack or ''}", "")))
        self.page.goto(self.server.url)
        self.page.wait_for_function(APP_READY, timeout=120_000)
        self.page.evaluate(PAGE_SETUP)
        return self

    def screenshot(self, step: str) -> Path:
        ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS_DIR / f"{self.name}-{step}.png"
        self.page.screenshot(path=str(path))
        return path

    def errors(self, since: int = 0) -> list[str]:
        """Console errors, less failed requests to other hosts (the registry, update checks, model
        hosts: offline here)."""
        return [
            f"{kind}: {text} [{url}]" for kind, text, url in self.console[since:]
            if kind in ("error", "pageerror")
            and not (text.startswith("Failed to load resource") and not url.startswith(self.server.url))
            and not text.startswith(OFFLINE_FETCH)
        ]

    def pack_errors(self) -> list[str]:
        """Console errors that name this pack (its nodes, its files, its extension folder)."""
        return [
            line for line in self.errors()
            if any(marker in line for marker in PACK_MARKERS) and not EXPECTED_404.match(line)
        ]

    def open_dialogs(self) -> list[str]:
        return self.page.eval_on_selector_all(
            "[role=dialog]", "ds => ds.filter((d) => d.offsetParent !== null).map((d) => d.innerText)"
        )

    def load_workflow(self, workflow: dict) -> LoadReport:
        """Load a UI workflow the way a file drop ends: `app.loadGraphData(json)`."""
        since = len(self.console)
        self.page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
        self.page.wait_for_timeout(300)  # dialogs open on the next tick
        return LoadReport(self.open_dialogs(), self.errors(since), self.widgets())

    def widgets(self) -> dict[str, dict]:
        return {str(k): v for k, v in self.page.evaluate(WIDGETS_BY_NODE).items()}

    def graph_to_prompt(self) -> dict:
        """The frontend's own UI -> API conversion (what the Run button posts as `prompt`)."""
        return self.page.evaluate("async () => (await window.app.graphToPrompt()).output")

    def serialize(self) -> dict:
        """The graph as the frontend saves it (JSON, so unset fields are left out)."""
        return self.page.evaluate("() => JSON.parse(JSON.stringify(window.app.graph.serialize()))")

    def fit_view(self) -> None:
        """Zoom to the whole graph (the canvas only draws, and so only loads images of, nodes in view)."""
        self.page.evaluate("async () => { await window.app.extensionManager.command.execute('Comfy.Canvas.FitView'); }")

    def graph_picture(self) -> bytes:
        """PNG of the whole graph alone: focus mode (no menus or panels), zoomed to fit, cropped to the nodes."""
        self.page.evaluate("async () => { await window.app.extensionManager.command.execute('Workspace.ToggleFocusMode'); }")
        self.fit_view()
        self.page.wait_for_timeout(500)
        left, top, right, bottom = self.page.evaluate(
            """() => { const nodes = window.app.graph.nodes, title = LiteGraph.NODE_TITLE_HEIGHT;
              return [Math.min(...nodes.map((n) => n.pos[0])), Math.min(...nodes.map((n) => n.pos[1] - title)),
                      Math.max(...nodes.map((n) => n.pos[0] + n.size[0])), Math.max(...nodes.map((n) => n.pos[1] + n.size[1]))]; }"""
        )
        (x0, y0), (x1, y1) = self.client_pos(left - 10, top - 10), self.client_pos(right + 10, bottom + 10)
        return self.page.screenshot(clip={"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0})

    def run_and_wait_for_image(self, node_id: int, timeout_s: float = 240) -> dict:
        """Click Run, wait until `node_id` shows its output image(s) on the canvas."""
        self.fit_view()
        self.page.get_by_role("button", name="Run", exact=True).click()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            shown = self.page.evaluate(IMAGE_SHOWN, node_id)
            if shown and "error" in shown:
                raise AssertionError(f"execution failed: {json.dumps(shown['error'])[:3000]}")
            if shown:
                return shown
            self.page.wait_for_timeout(250)
        raise AssertionError(
            f"node {node_id} showed no image within {timeout_s} s; dialogs: {self.open_dialogs()}\n"
            f"server log tail:\n{self.server.log()[-3000:]}"
        )

    def report_text(self, node_id: int, timeout_s: float = 30) -> str:
        """The text box the pack's extension draws inside node `node_id` after a run (waits for it)."""
        shown = f"document.querySelector('textarea[data-flowmatch-report=\"{node_id}\"]')"
        self.page.wait_for_function(f"() => {shown} && {shown}.value", timeout=timeout_s * 1000)
        return self.page.evaluate(f"() => {shown}.value")

    def client_pos(self, canvas_x: float, canvas_y: float) -> tuple[float, float]:
        """Page coordinates of a graph-space point."""
        return tuple(self.page.evaluate(
            "([x, y]) => { const c = window.app.canvas; const r = c.canvas.getBoundingClientRect();"
            " return [(x + c.ds.offset[0]) * c.ds.scale + r.left, (y + c.ds.offset[1]) * c.ds.scale + r.top]; }",
            [canvas_x, canvas_y],
        ))


def slug(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.split("::", 1)[-1]).strip("_")


@pytest.fixture(scope="session")
def chromium():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no chromium at {CHROMIUM}: run `make browser-deps` (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def frontend_server(comfy_server):
    """`comfy_server` with the settings a returning user has."""
    status, body = comfy_server.post_json("/api/settings", FRONTEND_SETTINGS)
    assert status == 200, body
    return comfy_server


@pytest.fixture(scope="session")
def newest_frontend_server(start_comfy_server):
    """A second server, on the newest frontend package, with the same settings."""
    if not (NEWEST_FRONTEND_ROOT / "index.html").is_file():
        pytest.fail(f"no frontend at {NEWEST_FRONTEND_ROOT}: run `make newest-frontend`")
    server = start_comfy_server("--preview-method", "latent2rgb", "--front-end-root", str(NEWEST_FRONTEND_ROOT))
    status, body = server.post_json("/api/settings", FRONTEND_SETTINGS)
    assert status == 200, body
    return server


def open_page(chromium, server, request):
    """A ComfyPage in a fresh context; the generator closes it and fails on console errors from the pack."""
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    page = ComfyPage(context.new_page(), server, slug(request.node.nodeid)).open()
    yield page
    page.screenshot("end")
    context.close()
    assert not page.pack_errors(), "console errors from the pack:\n" + "\n".join(page.pack_errors())


@pytest.fixture
def comfy_page(chromium, frontend_server, request):
    yield from open_page(chromium, frontend_server, request)


@pytest.fixture(params=["pinned", "newest"])
def any_frontend_page(chromium, request):
    """The test on frontend 1.32.9 (ComfyUI 0.3.75's pin) and on the newest frontend."""
    server = request.getfixturevalue("frontend_server" if request.param == "pinned" else "newest_frontend_server")
    yield from open_page(chromium, server, request)
