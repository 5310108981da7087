// The supervisor console: live calls (listen, whisper, barge from the supervisor's own
// phone; why the call went where it went), agents (state on their behalf), waiting
// callers, agent performance and recordings. Only the control-plane API.
"use strict";

const sup = { me: null, reasons: [] };
const $ = (id) => document.getElementById(id);

function cell(tag, content) {
  const e = document.createElement(tag);
  if (content instanceof Node) e.append(content); else e.textContent = content;
  return e;
}

function button(label, onClick, attrs = {}) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  for (const [k, v] of Object.entries(attrs)) b.setAttribute(k, v);
  b.addEventListener("click", () => act(onClick));
  return b;
}

async function act(fn) {
  $("error").textContent = "";
  try { await fn(); } catch (e) { $("error").textContent = e.message; }
}

function post(path, body) { return Console.api(path, { method: "POST", body }); }

async function renderCalls() {
  const calls = await Console.api("/api/v1/calls");
  $("calls").replaceChildren(...calls.map((c) => {
    const tr = document.createElement("tr");
    tr.dataset.call = c.call_uuid;
    const th = cell("th", c.caller); th.scope = "row";
    const join = document.createElement("span");
    for (const mode of ["listen", "whisper", "barge"]) {
      join.append(button(mode[0].toUpperCase() + mode.slice(1), () =>
        post(`/api/v1/calls/${c.call_uuid}/supervise`, { mode, supervisor: sup.me }),
        { "data-mode": mode, "aria-label": `${mode} to the call of ${c.caller}` }), " ");
    }
    const sups = Object.entries(c.supervisors || {}).map(([s, m]) => `${s}: ${m}`).join(", ");
    tr.append(th, cell("td", c.queue || "–"), cell("td", c.agent || "–"), cell("td", c.phase),
      cell("td", sups || "–"), cell("td", join),
      cell("td", button("Explain", async () => {
        const r = await Console.api(`/api/v1/calls/${c.call_uuid}/explain`);
        $("explain").textContent = r.text;
      }, { "aria-label": `why the call of ${c.caller} went where it went` })));
    return tr;
  }));
}

async function renderAgents() {
  const agents = await Console.api("/api/v1/agents");
  $("agents").replaceChildren(...agents.map((a) => {
    const tr = document.createElement("tr");
    tr.dataset.agent = a.extension;
    const th = cell("th", `${a.extension} ${a.name}`); th.scope = "row";
    const state = cell("td", a.state.replace("_", " ") + (a.reason ? ` (${a.reason})` : ""));
    state.dataset.state = a.state;
    const select = document.createElement("select");
    select.setAttribute("aria-label", `new state for ${a.extension}`);
    select.append(new Option("Ready", "ready"));
    for (const r of sup.reasons) select.append(new Option(`Not ready: ${r}`, "not_ready:" + r));
    select.append(new Option("Logged out", "logged_out"));
    const set = button("Set", () => {
      const [st, reason] = select.value.split(":");
      return post(`/api/v1/agents/${a.extension}/state`, { state: st, reason });
    }, { "aria-label": `set the state of ${a.extension}` });
    const td = cell("td", select); td.append(" ", set);
    tr.append(th, state, td);
    return tr;
  }));
}

async function renderQueues() {
  const queues = await Console.api("/api/v1/queues");
  const parts = await Promise.all(queues.map(async (q) => {
    const callers = await Console.api(`/api/v1/queues/${encodeURIComponent(q.name)}/callers`);
    const div = document.createElement("div");
    div.dataset.queue = q.name;
    div.append(cell("h3", `${q.name}: ${q.waiting} waiting`));
    const ol = document.createElement("ol");
    for (const c of callers) {
      ol.append(cell("li", `${Console.secs(c.waited_ms / 1000)} waiting` + (c.offered_to.length ? `, ringing ${c.offered_to.join(", ")}` : "")));
    }
    div.append(ol);
    return div;
  }));
  $("queues").replaceChildren(...parts);
}

async function renderPerformance() {
  const r = await Console.api("/api/v1/reports/agents");
  $("perf").replaceChildren(...r.rows.map((row) => {
    const tr = document.createElement("tr");
    tr.dataset.agent = row.key;
    const t = row.time || {};
    const th = cell("th", row.key); th.scope = "row";
    tr.append(th, cell("td", String(row.handled)), cell("td", Console.secs(row.aht_secs)),
      cell("td", Console.secs(row.acw_secs)), cell("td", Console.pct(t.occupancy)),
      cell("td", Console.pct(row.fcr_by_disposition)), cell("td", Console.pct(row.csat)));
    return tr;
  }));
}

async function renderRecordings() {
  const page = await Console.api("/api/v1/records?limit=20");
  const recorded = page.records.filter((r) => r.recording);
  $("recordings").replaceChildren(...recorded.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.call = r.call_uuid;
    const src = `/api/v1/calls/${r.call_uuid}/recording.wav`;
    const audio = document.createElement("audio");
    audio.controls = true; audio.preload = "none"; audio.src = src;
    audio.setAttribute("aria-label", `recording of the call of ${r.caller}`);
    const link = document.createElement("a");
    link.href = src; link.download = `${r.call_uuid}.wav`; link.textContent = "Download";
    const th = cell("th", r.caller); th.scope = "row";
    tr.append(th, cell("td", r.agent || "–"), cell("td", new Date(r.ended_ms).toLocaleTimeString()),
      cell("td", audio), cell("td", link));
    return tr;
  }));
}

async function refresh() {
  await Promise.all([renderCalls(), renderAgents(), renderQueues(), renderPerformance()]);
  document.body.dataset.refreshed = String(Date.now());
}

async function start() {
  const me = await Console.api("/api/v1/me");
  sup.me = me.extension;
  $("me").textContent = me.extension || me.name;
  sup.reasons = await Console.api("/api/v1/pause-reasons");
  const again = Console.debounce(() => refresh().catch((e) => { $("error").textContent = e.message; }), 100);
  const records = Console.debounce(() => renderRecordings().catch(console.error), 300);
  Console.follow(
    ["call.arrived", "call.answered", "call.held", "call.resumed", "call.supervisor", "call.transferred",
     "call.ended", "agent.state", "queue.entered", "queue.offered", "queue.answered", "queue.abandoned"],
    (e) => { again(); if (e.type === "call.ended") records(); },
    () => { again(); records(); },
    (live) => { $("live").dataset.live = String(live); $("live").textContent = live ? "live" : "reconnecting…"; },
  );
  await Promise.all([refresh(), renderRecordings()]);
}

$("logout").addEventListener("click", Console.logout);
start().catch((e) => { $("live").textContent = "error: " + e.message; });
