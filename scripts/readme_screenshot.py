"""The README's picture of a workflow in the UI (docs/ui_text_to_image.png): ComfyUI with the
pack on a free port, the real frontend in headless Chromium, the text_to_image template
loaded and run, the canvas fitted to the graph and captured after the image shows.

    python scripts/readme_screenshot.py [WORKFLOW.json] [OUT.png]

Rerun it after changing the template or the frontend extension.
"""

import json
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

from comfyui_flowmatch.client.local_server import LocalComfyUI

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False, "Comfy.Graph.CanvasInfo": False}
APP_READY = "() => !!(window.app && window.app.graph && window.app.canvas && window.app.extensionManager)"
IMAGE_SHOWN = """(id) => { const imgs = window.app.graph.getNodeById(id)?.imgs || [];
  return imgs.length > 0 && imgs.every((i) => i.complete && i.naturalWidth > 0); }"""
# The frontend's "what's new" banner across the top: click the last button of its row.
CLOSE_NEWS_BANNER = """() => { const tryIt = [...document.querySelectorAll('button')].find((b) => b.innerText.trim() === 'Try it out');
  let row = tryIt; while (row && row.parentElement && row.getBoundingClientRect().width < window.innerWidth * 0.9) row = row.parentElement;
  const buttons = row ? [...row.querySelectorAll('button')] : []; if (buttons.length > 1) buttons.at(-1).click(); }"""


def default_workflow() -> Path:
    for path in (ROOT / "example_workflows" / "1 Text to image.json", ROOT / "workflows" / "text_to_image.json"):
        if path.is_file():
            return path
    raise SystemExit("no text-to-image template in example_workflows/ (or workflows/)")


def main(workflow_path: Path, out: Path) -> None:
    workflow = json.loads(workflow_path.read_text())
    (save_node,) = [node["id"] for node in workflow["nodes"] if node["type"] == "SaveImage"]
    with LocalComfyUI() as server, sync_playwright() as playwright:
        server.post_json("/api/settings", SETTINGS)
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 760})
        page.goto(server.url)
        page.wait_for_function(APP_READY, timeout=120_000)
        page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
        page.evaluate("async () => { await window.app.extensionManager.command.execute('Comfy.Canvas.FitView'); }")
        page.get_by_role("button", name="Run", exact=True).click()
        page.wait_for_function(IMAGE_SHOWN, arg=save_node, timeout=240_000)
        page.evaluate(CLOSE_NEWS_BANNER)
        page.evaluate("async () => { await window.app.extensionManager.command.execute('Comfy.Canvas.FitView'); }")
        page.wait_for_timeout(800)
        page.screenshot(path=str(out))
        browser.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else default_workflow(),
         Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "docs" / "ui_text_to_image.png")
