"""The pack in both frontends: the one ComfyUI 0.3.75 pins (1.32.9) and the newest package.

What the nodes report (their `text` UI output) shows on them after a run, through the pack's
extension web/js/flowmatch.js; every template opens from the Templates dialog, listed in
numbered order, without a missing-node warning; the native ones point at their downloads.
"""

import json
import re
from pathlib import Path

import pytest

from comfyui_flowmatch.client.local_server import PACK_FOLDER_NAME

pytestmark = pytest.mark.browser

WORKFLOWS_DIR = Path(__file__).resolve().parents[2] / "example_workflows"
TEMPLATES = sorted(WORKFLOWS_DIR.glob("*.json"), key=lambda p: (int(re.match(r"\d+", p.stem)[0]), p.stem))
TEXT_TO_IMAGE = TEMPLATES[0]
UNKNOWN_WORD_PROMPT = "a purple unicorn in the middle"

# {node id: text} of every report box that is on screen.
REPORTS = """() => Object.fromEntries([...document.querySelectorAll('textarea[data-flowmatch-report]')]
  .filter((t) => t.offsetParent !== null && t.getBoundingClientRect().height > 0)
  .map((t) => [t.dataset.flowmatchReport, {text: t.value, box: t.getBoundingClientRect().toJSON()}]))"""
# On-screen text that warns of missing nodes: 1.32.9 opens a dialog, newer frontends show a toast.
MISSING_NODE_WARNINGS = """() => [...document.querySelectorAll('body *')]
  .filter((e) => !e.children.length && e.offsetParent !== null && /missing node/i.test(e.innerText || ''))
  .map((e) => e.innerText)"""
VISIBLE_TEXT = "() => document.body.innerText"
TEMPLATE_CARDS = "() => [...document.querySelectorAll(\"[role=dialog] [data-testid^='template-workflow-']\")]" \
    ".map((e) => e.dataset.testid.replace('template-workflow-', ''))"


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def node_box(page, node: dict) -> tuple[float, float, float, float]:
    """The node's body on screen: (left, top, right, bottom) in page pixels."""
    x, y = node["pos"]
    size = page.page.evaluate("(id) => window.app.graph.getNodeById(id).size", node["id"])
    return (*page.client_pos(x, y), *page.client_pos(x + size[0], y + size[1]))


def run_command(page, command: str) -> None:
    page.page.evaluate("async (c) => { await window.app.extensionManager.command.execute(c); }", command)


def test_node_reports_show_on_the_nodes(any_frontend_page):
    """After a run, the sampler's NFE and the encoder's unknown-word warning are in text boxes
    drawn inside their nodes, and back after a visit to another tab; the empty negative prompt,
    with nothing to report, gets no box. The run shows the 32 px image upscaled 8x (256 px)."""
    page = any_frontend_page
    workflow = read(TEXT_TO_IMAGE)
    nodes = {node["id"]: node for node in workflow["nodes"]}
    (sampler,) = [n for n in workflow["nodes"] if n["type"] == "FlowMatchSampler"]
    positive, negative = sorted((n for n in workflow["nodes"] if n["type"] == "FlowMatchTextEncode"), key=lambda n: n["id"])
    (save,) = [n for n in workflow["nodes"] if n["type"] == "SaveImage"]
    positive["widgets_values"][0] = UNKNOWN_WORD_PROMPT
    assert negative["widgets_values"][0] == ""
    report = page.load_workflow(workflow)
    assert report.unregistered == [] and report.dialogs == [], (report.unregistered, report.dialogs)
    assert page.page.evaluate(REPORTS) == {}, "no reports before a run"

    shown = page.run_and_wait_for_image(save["id"])
    assert shown["sizes"] == [[256, 256]]
    page.page.wait_for_function(f"() => Object.keys(({REPORTS})()).length >= 2", timeout=30_000)
    page.fit_view()
    page.page.wait_for_timeout(500)
    page.screenshot("reports")
    reports = page.page.evaluate(REPORTS)

    steps, solver = sampler["widgets_values"][2], sampler["widgets_values"][4]
    assert solver == "heun"  # two evaluations a step, but one on the last step (it ends at sigma 0)
    expected = f"heun: {2 * steps - 1} model evaluations (NFE), {steps} steps accepted, 0 rejected"
    assert reports[str(sampler["id"])]["text"] == expected
    warning = reports[str(positive["id"])]["text"]
    assert "unknown words" in warning and "'unicorn'" in warning and "'purple'" not in warning, warning
    assert str(negative["id"]) not in reports
    for node_id, shown_report in reports.items():
        left, top, right, bottom = node_box(page, nodes[int(node_id)])
        box = shown_report["box"]
        assert left - 1 <= box["left"] and box["right"] <= right + 1 and top - 1 <= box["top"] and box["bottom"] <= bottom + 1, \
            (node_id, box, (left, top, right, bottom))

    # Another tab and back: the reports come back with the workflow's outputs.
    run_command(page, "Comfy.NewBlankWorkflow")
    page.page.wait_for_function(f"() => Object.keys(({REPORTS})()).length === 0", timeout=30_000)
    run_command(page, "Workspace.PreviousOpenedWorkflow")
    page.page.wait_for_function(f"() => Object.keys(({REPORTS})()).length >= 2", timeout=30_000)
    page.screenshot("tab-again")
    assert {k: v["text"] for k, v in page.page.evaluate(REPORTS).items()} == {k: v["text"] for k, v in reports.items()}


def open_templates(page) -> list[str]:
    """Opens Templates, picks this pack's category; returns the card names in their order."""
    page.page.get_by_role("button", name="Templates").click()
    dialog = page.page.locator("[role=dialog]")
    dialog.get_by_text(PACK_FOLDER_NAME, exact=True).first.click()
    page.page.wait_for_function(f"() => ({TEMPLATE_CARDS})().length === {len(TEMPLATES)}", timeout=20_000)
    return page.page.evaluate(TEMPLATE_CARDS)


def test_every_template_opens_without_missing_nodes(any_frontend_page, request):
    """The Templates dialog lists ours from "1 Text to image" on; each opens with every node known
    and no missing-node warning; the native ones report their absent model files as missing
    models. A workflow with an unknown node does raise the warning looked for."""
    page = any_frontend_page
    for path in TEMPLATES:
        workflow = read(path)
        assert open_templates(page) == [path.stem for path in TEMPLATES]
        page.screenshot(f"templates-{path.stem[0]}")
        page.page.locator(f"[role=dialog] [data-testid='template-workflow-{path.stem}']").click()
        page.page.wait_for_function(
            "([n, name]) => window.app.graph.nodes.length === n && !document.querySelector(`[data-testid='template-workflow-${name}']`)",
            arg=[len(workflow["nodes"]), path.stem], timeout=30_000,
        )
        page.page.wait_for_timeout(1000)  # warnings open after the graph is configured
        page.screenshot(f"opened-{path.stem[0]}")
        assert page.widgets() and not [n for n in page.widgets().values() if not n["registered"]], path.stem
        assert page.page.evaluate(MISSING_NODE_WARNINGS) == [], path.stem
        models = [m for node in workflow["nodes"] for m in node.get("properties", {}).get("models", [])]
        if models:
            shown = page.page.evaluate(VISIBLE_TEXT)
            if request.node.callspec.params["any_frontend_page"] == "pinned":
                assert "Missing Models" in shown and all(m["name"] in shown for m in models), shown[-2000:]
            else:
                assert f"{len(models)} issues found" in shown, shown[-2000:]
        page.page.keyboard.press("Escape")

    broken = read(TEXT_TO_IMAGE)
    broken["nodes"][0]["type"] = "NoSuchNodeType"
    page.load_workflow(broken)
    page.page.wait_for_timeout(1000)
    assert page.page.evaluate(MISSING_NODE_WARNINGS), "the missing-node check sees nothing"
