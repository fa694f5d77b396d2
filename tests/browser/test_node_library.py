"""Our nodes as a user meets them: node library, canvas search, tooltips, help panel."""

import re
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

DOCS_DIR = Path(__file__).resolve().parents[2] / "web" / "docs"
PACK_MODULE = "custom_nodes.comfyui_flowmatch"
NODE_IDS = {
    "FlowMatchModelLoader", "FlowMatchTextEncode", "FlowMatchSampler",
    "FlowMatchODESampler", "FlowMatchScheduler", "FlowMatchEmptyLatent",
    "FlowMatchInvert", "FlowMatchEdit", "FlowMatchOptimalSchedule", "FlowMatchTrajectory", "FlowMatchLikelihood",
    "FlowMatchGuidanceInterval",
}


def squash(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def our_nodes(frontend_server) -> dict[str, dict]:
    info = frontend_server.get_json("/object_info")
    return {name: node for name, node in info.items() if node["python_module"] == PACK_MODULE}


def test_every_node_has_its_help_page_served(frontend_server, our_nodes):
    """web/docs/<NodeId>.md for every node, describing each input and output, served where the help panel looks."""
    assert set(our_nodes) == NODE_IDS
    for name, node in our_nodes.items():
        doc = (DOCS_DIR / f"{name}.md").read_text()
        documented = set(re.findall(r"^\| `(\w+)` \|", doc, re.M))
        assert documented == set(node["input_order"]["required"]) | set(node["input_order"].get("optional", [])) | \
            set(node["output_name"]), name
        # The URL the help panel falls back to (frontend 1.32.9, NodeHelpService.fetchCustomNodeHelp).
        url = f"{frontend_server.url}/extensions/comfyui_flowmatch/docs/{name}.md"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.read().decode() == doc, name


def test_library_lists_nodes_with_descriptions(comfy_page, our_nodes):
    page = comfy_page.page
    page.get_by_role("button", name="Node Library (n)").click()
    page.locator(".node-lib-search-box input").first.fill("Flow Match")
    for name, node in sorted(our_nodes.items()):
        leaf = page.locator(f".p-tree-node-leaf[aria-label='{node['display_name']}']")
        leaf.hover()
        preview = page.locator(".node-lib-node-preview")
        preview.get_by_text(node["display_name"], exact=True).wait_for()
        comfy_page.screenshot(f"preview-{name}")
        assert squash(node["description"]) in squash(preview.inner_text()), name


def test_canvas_search_finds_our_nodes_with_descriptions(comfy_page, our_nodes):
    """Double-click the canvas, type: each node is offered with its category, its preview shows the description."""
    page = comfy_page.page
    page.evaluate("() => window.app.graph.clear()")
    search = page.locator(".comfy-vue-node-search-container input").first
    for attempt in range(3):  # on a loaded machine the first double-click can land before the canvas listens
        page.mouse.dblclick(640, 450)
        try:
            search.wait_for(timeout=10_000)
            break
        except PlaywrightTimeout:
            if attempt == 2:
                raise
    search.press_sequentially("flow match")  # into the search box, never to the canvas's key shortcuts
    options = page.locator(".p-autocomplete-option")
    expect(options).to_have_count(len(our_nodes), timeout=30_000)  # the box lists other nodes until it filters
    offered = [text.split("\n")[0].strip() for text in options.all_inner_texts()]
    assert sorted(offered) == sorted(node["display_name"] for node in our_nodes.values())
    by_display_name = {node["display_name"]: node for node in our_nodes.values()}
    for i, name in enumerate(offered):
        options.nth(i).hover()
        preview = page.locator("._sb_node_preview")
        preview.get_by_text(name, exact=True).wait_for()
        assert squash(by_display_name[name]["description"]) in squash(preview.inner_text()), name
        assert by_display_name[name]["category"].replace("/", " > ") in squash(options.nth(i).inner_text()), name
    comfy_page.screenshot("search")
    page.keyboard.press("Enter")
    page.wait_for_function("() => window.app.graph.nodes.length === 1")


def input_tooltips(node: dict) -> dict[str, str]:
    return {
        input_name: spec[1]["tooltip"]
        for section in ("required", "optional")
        for input_name, spec in node["input"].get(section, {}).items()
    }


def test_canvas_shows_description_and_input_tooltips(comfy_page, our_nodes):
    """Hover each node's title and each input (socket or widget): the tooltip is the one /object_info declares."""
    page = comfy_page.page
    shown: dict[tuple[str, str], str] = {}
    for name, node in sorted(our_nodes.items()):
        targets = page.evaluate(
            """async (type) => {
              const g = window.app.graph; g.clear();
              const c = window.app.canvas; c.ds.offset = [0, 0]; c.ds.scale = 1;
              const n = LiteGraph.createNode(type); n.pos = [300, 200]; g.add(n); c.setDirty(true, true);
              await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));  // widgets laid out
              const points = {__title__: [n.pos[0] + 20, n.pos[1] - LiteGraph.NODE_TITLE_HEIGHT / 2]};
              n.inputs.forEach((input, i) => { if (!input.widget) points[input.name] = n.getConnectionPos(true, i); });
              const named = new Set(n.inputs.map((i) => i.name));
              (n.widgets || []).forEach((w) => { if (w.y && named.has(w.name)) points[w.name] = [n.pos[0] + 40, n.pos[1] + w.y + 5]; });
              return points;
            }""",
            name,
        )
        tooltip = page.locator(".node-tooltip")
        for target, (x, y) in targets.items():
            page.mouse.move(*comfy_page.client_pos(50, 50))  # empty canvas: the last tooltip goes
            tooltip.wait_for(state="hidden", timeout=3000)
            page.mouse.move(*comfy_page.client_pos(x - 3, y))
            page.mouse.move(*comfy_page.client_pos(x, y))
            tooltip.wait_for(timeout=3000)
            shown[(name, target)] = squash(tooltip.inner_text())
        comfy_page.screenshot(f"tooltip-{name}")
    expected = {
        **{(name, "__title__"): squash(node["description"]) for name, node in our_nodes.items()},
        **{(name, input_name): squash(tip) for name, node in our_nodes.items()
           for input_name, tip in input_tooltips(node).items()},
    }
    assert shown == expected


def test_help_panel_renders_our_doc_page(comfy_page, our_nodes):
    page = comfy_page.page
    page.get_by_role("button", name="Node Library (n)").click()
    for name, node in sorted(our_nodes.items()):
        doc = (DOCS_DIR / f"{name}.md").read_text()
        title = re.search(r"^# (.+)$", doc, re.M).group(1)
        page.locator(".node-lib-search-box input").first.fill(node["display_name"])
        leaf = page.locator(f".p-tree-node-leaf[aria-label='{node['display_name']}']")
        leaf.hover()
        leaf.locator("button").last.click()  # the "?" beside the bookmark
        content = page.locator(".node-help-content")
        content.locator("h1", has_text=title).wait_for(timeout=10_000)
        images = content.locator("img")
        for i in range(images.count()):
            images.nth(i).scroll_into_view_if_needed()
            assert images.nth(i).evaluate("img => img.decode().then(() => img.naturalWidth)") > 0, name
        comfy_page.screenshot(f"help-{name}")
        content.locator("xpath=..").locator("button").first.click()  # back to the library
