// The agent desktop: the agent's own state, the screen pop of the call it is offered or
// on (caller, IVR variables, history), the call's controls, after-call work and the
// agent's own figures. Everything goes through the control-plane API.
"use strict";

const desk = { me: null, agent: null, call: null, lastCall: null, history: null };

const $ = (id) => document.getElementById(id);

async function act(fn) {
  $("error").textContent = "";
  try { await fn(); } catch (e) { $("error").textContent = e.message; }
}

function post(path, body) { return Console.api(path, { method: "POST", body }); }

function render() {
  const a = desk.agent;
  const st = $("state");
  st.dataset.state = a.state;
  st.textContent = a.state.replace("_", " ") + (a.reason ? " (" + a.reason + ")" : "");
  const c = desk.call || desk.lastCall;
  $("pop").classList.toggle("hidden", !c);
  if (c) {
    $("caller").textContent = c.caller;
    $("phase").textContent = desk.call ? c.phase : "ended";
    const rows = Object.entries(c.variables || {}).map(([k, v]) => {
      const tr = document.createElement("tr");
      const th = document.createElement("th"); th.scope = "row"; th.textContent = k;
      const td = document.createElement("td"); td.textContent = v; td.dataset.variable = k;
      tr.append(th, td);
      return tr;
    });
    $("variables").replaceChildren(...rows);
    $("history").textContent = desk.history || "";
    const talking = !!desk.call && (c.phase === "talking" || c.phase === "held");
    for (const id of ["hold", "record", "transfer", "transfer-to", "hangup"]) $(id).disabled = !talking;
    $("hold").textContent = c.phase === "held" ? "Resume" : "Hold";
    $("hold").setAttribute("aria-pressed", String(c.phase === "held"));
    $("record").textContent = c.recording === "paused" ? "Resume recording" : "Pause recording";
  }
  $("end-wrap").disabled = a.state !== "wrap_up";
}

async function history(caller, uuid) {
  const h = await Console.api(`/api/v1/callers/${encodeURIComponent(caller)}/history`);
  const before = h.recent.filter((r) => r.call_uuid !== uuid);
  if (!before.length) return "First contact in " + h.window_days + " days.";
  const last = before[0];
  const outcome = last.outcome ? last.outcome.code : last.disposition;
  const times = before.length === 1 ? "once" : before.length + " times";
  return `Called ${times} in ${h.window_days} days, last: ${outcome}` + (last.agent ? ` with ${last.agent}` : "") + ".";
}

async function refresh() {
  desk.agent = await Console.api(`/api/v1/agents/${desk.me}`);
  const uuid = desk.agent.call_uuid;
  if (uuid) {
    const info = await Console.api(`/api/v1/calls/${uuid}`);
    if (info.live) {
      const isNew = !desk.call || desk.call.call_uuid !== uuid;
      desk.call = info.live;
      desk.lastCall = info.live;
      if (isNew) {
        desk.history = await history(info.live.caller, uuid);
        $("saved").textContent = "";
      }
    }
  } else if (desk.call) {
    desk.call = null; // it ended: kept as lastCall for its disposition
  }
  render();
  const today = await Console.api(`/api/v1/reports/agents`);
  const row = today.rows.find((r) => r.key === desk.me);
  const t = row ? row.time || {} : {};
  const figs = [
    ["Calls", row ? String(row.handled) : "0", "handled"],
    ["AHT", Console.secs(row && row.aht_secs), "aht"],
    ["ACW", Console.secs(row && row.acw_secs), "acw"],
    ["Occupancy", Console.pct(t.occupancy), "occupancy"],
    ["FCR", Console.pct(row && row.fcr_by_disposition), "fcr"],
    ["CSAT", Console.pct(row && row.csat), "csat"],
  ];
  $("today").replaceChildren(...figs.map(([label, value, key]) => {
    const d = document.createElement("div");
    const dt = document.createElement("dt"); dt.textContent = label;
    const dd = document.createElement("dd"); dd.textContent = value; dd.dataset.figure = key;
    d.append(dt, dd);
    return d;
  }));
  document.body.dataset.refreshed = String(Date.now());
}

async function start() {
  const me = await Console.api("/api/v1/me");
  if (!me.extension) throw new Error("this login has no extension");
  desk.me = me.extension;
  $("me").textContent = me.extension;
  const [reasons, codes] = await Promise.all([
    Console.api("/api/v1/pause-reasons"), Console.api("/api/v1/dispositions"),
  ]);
  $("reason").replaceChildren(...reasons.map((r) => new Option(r, r)));
  $("disposition").replaceChildren(...codes.map((c) => new Option(c.label || c.code, c.code)));
  const again = Console.debounce(() => refresh().catch((e) => { $("error").textContent = e.message; }), 50);
  Console.follow(
    ["agent.state", "queue.offered", "call.answered", "call.held", "call.resumed", "call.recording",
     "call.transferred", "call.ended", "call.disposition", "agent.wrap_up_ended"],
    again, again,
    (live) => { $("live").dataset.live = String(live); $("live").textContent = live ? "live" : "reconnecting…"; },
  );
  await refresh();
}

$("ready").addEventListener("click", () => act(() => post(`/api/v1/agents/${desk.me}/state`, { state: "ready" })));
$("not-ready").addEventListener("click", () => act(() => post(`/api/v1/agents/${desk.me}/state`, { state: "not_ready", reason: $("reason").value })));
$("log-out-queues").addEventListener("click", () => act(() => post(`/api/v1/agents/${desk.me}/state`, { state: "logged_out" })));
$("hold").addEventListener("click", () => act(() => post(`/api/v1/calls/${desk.call.call_uuid}/hold`, { hold: desk.call.phase !== "held" })));
$("record").addEventListener("click", () => act(() => post(`/api/v1/calls/${desk.call.call_uuid}/recording`, { action: desk.call.recording === "paused" ? "resume" : "pause" })));
$("hangup").addEventListener("click", () => act(() => post(`/api/v1/calls/${desk.call.call_uuid}/hangup`)));
$("transfer").addEventListener("click", () => act(async () => {
  const to = $("transfer-to").value.trim();
  const body = /^[0-9]+$/.test(to) ? { extension: to } : { queue: to };
  await post(`/api/v1/calls/${desk.call.call_uuid}/transfer`, body);
}));
$("wrap").addEventListener("submit", (e) => {
  e.preventDefault();
  const c = desk.call || desk.lastCall;
  act(async () => {
    await post(`/api/v1/calls/${c.call_uuid}/disposition`, { code: $("disposition").value, note: $("notes").value });
    $("saved").textContent = "Saved: " + $("disposition").value;
  });
});
$("end-wrap").addEventListener("click", () => act(() => post(`/api/v1/agents/${desk.me}/end-wrap-up`)));
$("logout").addEventListener("click", Console.logout);
start().catch((e) => { $("live").textContent = "error: " + e.message; });
