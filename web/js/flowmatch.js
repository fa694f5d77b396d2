// The pack's frontend extension (ComfyUI serves web/ as WEB_DIRECTORY and loads every .js in it).
//
// 1. What our nodes report (their `text` UI output: NFE and step counts, vocabulary warnings,
//    diagnostics...) is shown on the node after a run, in a read-only text box, the way the
//    core Preview Any node shows its text. Every node whose type starts with "FlowMatch" gets it,
//    and gets it back when its workflow's tab is shown again.
// 2. The server lists a pack's templates in directory order (arbitrary on Linux); ours are
//    listed by their numbered file names, so "1 Text to image" comes first.
import { api } from "../../../scripts/api.js";
import { app } from "../../../scripts/app.js";

const NODE_PREFIX = "FlowMatch";
const REPORT_WIDGET = "flowmatch_report";
// This file is served at /extensions/<pack folder>/js/flowmatch.js; templates are keyed by that folder.
const PACK_FOLDER = decodeURIComponent(new URL(import.meta.url).pathname.split("/").at(-3));

function reportText(output) {
  const lines = [].concat(output?.text ?? []).filter((line) => line !== null && line !== undefined);
  return lines.join("\n").trim();
}

function addReportWidget(node) {
  const box = document.createElement("textarea");
  box.readOnly = true;
  box.className = "comfy-multiline-input";
  box.dataset.flowmatchReport = String(node.id);
  const widget = node.addDOMWidget(REPORT_WIDGET, "flowmatch_report", box, {
    getValue: () => box.value,
    setValue: (value) => { box.value = value; },
    getMinHeight: () => 40,
    serialize: false,
  });
  widget.serialize = false;
  return widget;
}

function showReport(node, output) {
  const text = reportText(output);
  let widget = node.widgets?.find((w) => w.name === REPORT_WIDGET);
  if (!widget) {
    if (!text) return; // nothing to say, and no box from an earlier run to clear
    widget = addReportWidget(node);
    const [width, height] = node.computeSize();
    node.setSize([Math.max(width, node.size[0]), Math.max(height, node.size[1])]);
  }
  widget.value = text;
  node.setDirtyCanvas(true, true);
}

app.registerExtension({
  name: "comfyui_flowmatch.NodeReports",

  async init() {
    const listTemplates = api.getWorkflowTemplates.bind(api);
    api.getWorkflowTemplates = async () => {
      const templates = await listTemplates();
      if (Array.isArray(templates?.[PACK_FOLDER])) {
        templates[PACK_FOLDER].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
      }
      return templates;
    };
  },

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData.name.startsWith(NODE_PREFIX)) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      showReport(this, output);
    };
  },

  // Newer frontends hand a workflow's stored outputs back when its tab is shown again.
  onNodeOutputsUpdated(nodeOutputs) {
    for (const [nodeId, output] of Object.entries(nodeOutputs)) {
      const node = app.graph.getNodeById(Number(nodeId)); // nodes inside subgraphs have "a:b" ids: skipped
      if (node?.type?.startsWith(NODE_PREFIX)) showReport(node, output);
    }
  },
});
