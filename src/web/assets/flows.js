// The flows view: each IVR flow in force drawn as a graph (nodes in columns by their
// distance from the entry), check's diagnostics on the nodes, and simulate on the page.
"use strict";

const view = { flows: [] };
const $ = (id) => document.getElementById(id);
const NS = "http://www.w3.org/2000/svg";

function el(tag, attrs = {}, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// Columns by breadth-first distance from the entry; unreachable nodes in a last column.
function layout(flow) {
  const depth = {};
  const queue = [[flow.entry, 0]];
  while (queue.length) {
    const [n, d] = queue.shift();
    if (n in depth) continue;
    depth[n] = d;
    const node = flow.nodes.find((x) => x.name === n);
    if (node) for (const e of node.edges) queue.push([e.to, d + 1]);
  }
  const last = Math.max(-1, ...Object.values(depth)) + 1;
  const cols = {};
  for (const n of flow.nodes) (cols[depth[n.name] ?? last] ||= []).push(n);
  const pos = {};
  for (const [c, nodes] of Object.entries(cols)) nodes.forEach((n, i) => { pos[n.name] = [Number(c), i]; });
  return pos;
}

function draw(flow) {
  const pos = layout(flow);
  const W = 170, H = 46, GX = 90, GY = 36;
  const cols = Math.max(1, ...Object.values(pos).map((p) => p[0] + 1));
  const rows = Math.max(1, ...Object.values(pos).map((p) => p[1] + 1));
  const svg = el("svg", { viewBox: `0 0 ${cols * (W + GX)} ${rows * (H + GY) + 10}`, role: "img",
    "aria-label": `Graph of flow ${flow.name}: ${flow.nodes.length} nodes` });
  const at = (name) => { const [c, r] = pos[name] || [0, 0]; return [c * (W + GX) + 10, r * (H + GY) + 10]; };
  for (const n of flow.nodes) {
    const [x, y] = at(n.name);
    // One line per pair of nodes, naming every way that takes it ("2 / on_fail").
    const ways = {};
    for (const e of n.edges) if (e.to in pos) (ways[e.to] ||= []).push(e.label.replace(/^option /, ""));
    for (const [to, labels] of Object.entries(ways)) {
      const [tx, ty] = at(to);
      svg.append(el("line", { x1: x + W, y1: y + H / 2, x2: tx, y2: ty + H / 2, stroke: "#6b7c8d", "stroke-width": 1.5 }));
      svg.append(el("text", { x: (x + W + tx) / 2, y: (y + ty + H) / 2 - 3, fill: "#9fb0c0", "font-size": 11, "text-anchor": "middle" },
        labels.join(" / ")));
    }
  }
  for (const n of flow.nodes) {
    const [x, y] = at(n.name);
    const g = el("g", { "data-node": n.name, tabindex: 0 });
    const bad = n.diagnostics.length > 0;
    g.append(el("rect", { x, y, width: W, height: H, rx: 8, fill: "#24303b",
      stroke: bad ? "#ff8a7a" : n.name === flow.entry ? "#3d8fd6" : "#3a4a59", "stroke-width": bad || n.name === flow.entry ? 3 : 1 }));
    g.append(el("text", { x: x + 10, y: y + 19, fill: "#e8edf2", "font-size": 14, "font-weight": 700 }, n.name));
    g.append(el("text", { x: x + 10, y: y + 37, fill: "#9fb0c0", "font-size": 12 }, n.kind));
    g.append(el("title", {}, bad ? n.diagnostics.join("\n") : `${n.name} (${n.kind})`));
    if (bad) g.dataset.diagnostic = n.diagnostics.join("\n");
    svg.append(g);
  }
  $("graph").replaceChildren(svg);
  $("node-diagnostics").replaceChildren(...flow.nodes.flatMap((n) => n.diagnostics.map((d) => {
    const li = document.createElement("li");
    li.textContent = `${n.name}: ${d}`;
    return li;
  })));
}

async function start() {
  const r = await Console.api("/api/v1/flows");
  view.flows = r.flows;
  const lines = [...r.errors.map((e) => "error: " + e), ...r.warnings.map((w) => "warning: " + w)];
  $("check").replaceChildren(...(lines.length ? lines : ["no errors, no warnings"]).map((t) => {
    const li = document.createElement("li"); li.textContent = t; return li;
  }));
  $("flow").replaceChildren(...r.flows.map((f) => new Option(f.name, f.name)));
  const show = () => { const f = view.flows.find((x) => x.name === $("flow").value); if (f) draw(f); };
  $("flow").addEventListener("change", show);
  show();
  $("live").textContent = `${r.flows.length} flow(s) in force`;
}

$("simulate").addEventListener("submit", async (e) => {
  e.preventDefault();
  try {
    const r = await Console.api(`/api/v1/flows/${encodeURIComponent($("flow").value)}/simulate`, {
      method: "POST", body: { keys: $("keys").value, no_agents: $("no-agents").checked },
    });
    $("trace").textContent = r.lines.join("\n");
  } catch (err) {
    $("trace").textContent = "error: " + err.message;
  }
});
$("logout").addEventListener("click", Console.logout);
start().catch((e) => { $("live").textContent = "error: " + e.message; });
