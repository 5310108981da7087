// The wallboard: per queue, who waits now and how today went, from /api/v1/queues and
// /api/v1/reports; refreshed within a second of any event that can change a figure.
"use strict";

const state = { queues: [], today: {}, recent: {}, intervals: [], settings: null };

function level(value, warn, alarm, higherIsWorse = true) {
  if (value === null || value === undefined) return "";
  if (higherIsWorse) return value >= alarm ? "alarm" : value >= warn ? "warn" : "";
  return value < alarm ? "alarm" : value < warn ? "warn" : "";
}

function judged(q) {
  const s = state.settings;
  const t = state.today[q.name] || {};
  const target = q.today.service_level_target;
  const sl = t.service_level;
  return {
    waiting: level(q.waiting, s.waiting_warn, s.waiting_alarm),
    longest: level(q.longest_wait_ms / 1000, s.longest_wait_warn_secs, s.longest_wait_alarm_secs),
    sl: sl === null || sl === undefined ? "" : level(sl, target, target - s.service_level_margin, false),
    abandon: level(t.abandon_rate, s.abandon_rate_warn, s.abandon_rate_alarm),
  };
}

function worst(j) {
  const all = Object.values(j);
  return all.includes("alarm") ? "alarm" : all.includes("warn") ? "warn" : "";
}

function text(tag, content, cls) {
  const e = document.createElement(tag);
  e.textContent = content;
  if (cls) e.className = cls;
  return e;
}

function figure(dl, label, value, cls, key) {
  const d = document.createElement("div");
  d.append(text("dt", label));
  const dd = text("dd", value, cls);
  dd.dataset.figure = key;
  d.append(dd);
  dl.append(d);
}

function render() {
  const cards = document.getElementById("cards");
  const rows = document.getElementById("rows");
  cards.replaceChildren();
  rows.replaceChildren();
  for (const q of state.queues) {
    const t = state.today[q.name] || {};
    const r = state.recent[q.name] || {};
    const j = judged(q);
    const card = document.createElement("article");
    card.className = "card " + worst(j);
    card.dataset.queue = q.name;
    card.setAttribute("aria-label", "Queue " + q.name);
    card.append(text("h2", q.name));
    const dl = document.createElement("dl");
    dl.className = "big";
    figure(dl, "Waiting now", String(q.waiting), j.waiting, "waiting");
    figure(dl, "Longest wait", Console.secs(q.longest_wait_ms / 1000), j.longest, "longest");
    figure(dl, "Service level today", Console.pct(t.service_level), j.sl, "service_level");
    figure(dl, "Last 30 min", Console.pct(r.service_level), "", "service_level_30m");
    figure(dl, "Abandon rate", Console.pct(t.abandon_rate), j.abandon, "abandon_rate");
    figure(dl, "Target", Console.pct(q.today.service_level_target) + " in " + q.today.service_level_threshold_secs + "s", "", "target");
    card.append(dl);
    const a = q.agents;
    card.append(text("p", `Agents: ${a.ready} ready · ${a.busy} on call · ${a.wrap_up} wrap-up · ${a.paused} not ready`, "agents-line"));
    cards.append(card);

    const tr = document.createElement("tr");
    tr.dataset.queue = q.name;
    const cells = [
      [q.name, ""], [String(q.waiting), j.waiting], [Console.secs(q.longest_wait_ms / 1000), j.longest],
      [Console.pct(t.service_level), j.sl], [Console.pct(r.service_level), ""],
      [Console.pct(q.today.service_level_target), ""], [Console.pct(t.abandon_rate), j.abandon],
      [String(t.offered ?? 0), ""], [String(t.answered ?? 0), ""],
      [String(a.ready), ""], [String(a.busy), ""], [String(a.wrap_up), ""], [String(a.paused), ""],
    ];
    cells.forEach(([v, cls], i) => tr.append(text(i === 0 ? "th" : "td", v, cls)));
    tr.firstChild.setAttribute("scope", "row");
    rows.append(tr);
  }
  chart();
}

// Bars of calls offered and a line of service level, per 15 minutes of today.
function chart() {
  const ns = "http://www.w3.org/2000/svg";
  const W = 960, H = 200, pad = 30;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H + pad}`);
  svg.setAttribute("aria-hidden", "true");
  const slots = 96;
  const byStart = {};
  for (const row of state.intervals) byStart[row.interval] = row;
  const starts = Object.keys(byStart).sort();
  const max = Math.max(1, ...state.intervals.map((r) => r.offered));
  const w = (W - pad) / slots;
  const slotOf = (iso) => { const d = new Date(iso); return d.getHours() * 4 + Math.floor(d.getMinutes() / 15); };
  let line = "";
  for (const s of starts) {
    const r = byStart[s];
    const i = slotOf(s);
    const x = pad + i * w;
    const h = (r.offered / max) * (H - 10);
    const bar = document.createElementNS(ns, "rect");
    bar.setAttribute("x", x + 1); bar.setAttribute("y", H - h);
    bar.setAttribute("width", Math.max(1, w - 2)); bar.setAttribute("height", h);
    bar.setAttribute("fill", "#3d8fd6");
    bar.dataset.offered = r.offered;
    svg.append(bar);
    if (r.service_level !== null && r.service_level !== undefined) {
      line += `${line ? "L" : "M"}${x + w / 2},${H - r.service_level * (H - 10)}`;
    }
  }
  if (line) {
    const p = document.createElementNS(ns, "path");
    p.setAttribute("d", line); p.setAttribute("fill", "none");
    p.setAttribute("stroke", "#ffd166"); p.setAttribute("stroke-width", "2");
    svg.append(p);
  }
  for (let h = 0; h <= 24; h += 3) {
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", pad + h * 4 * w); t.setAttribute("y", H + 20);
    t.setAttribute("fill", "#9fb0c0"); t.setAttribute("font-size", "12");
    t.textContent = String(h).padStart(2, "0") + ":00";
    svg.append(t);
  }
  document.getElementById("chart").replaceChildren(svg);
}

function byKey(report) {
  const out = {};
  for (const r of report.rows) out[r.key] = r;
  return out;
}

async function refresh() {
  const since30 = new Date(Date.now() - 30 * 60 * 1000).toISOString();
  const tz = encodeURIComponent(Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC");
  const [queues, today, recent, intervals] = await Promise.all([
    Console.api("/api/v1/queues"),
    Console.api(`/api/v1/reports/queues?tz=${tz}`),
    Console.api(`/api/v1/reports/queues?from=${encodeURIComponent(since30)}`),
    Console.api(`/api/v1/reports/total?interval=15m&tz=${tz}`),
  ]);
  state.queues = queues;
  state.today = byKey(today);
  state.recent = byKey(recent);
  state.intervals = intervals.rows;
  render();
  document.body.dataset.refreshed = String(Date.now());
}

async function start() {
  const me = await Console.api("/api/v1/me");
  document.getElementById("who").textContent = me.name;
  state.settings = await Console.api("/api/v1/wallboard");
  const again = Console.debounce(() => refresh().catch(console.error), 100);
  Console.follow(
    ["queue.entered", "queue.answered", "queue.abandoned", "queue.overflowed", "queue.offered",
     "queue.completed", "queue.callback_answered", "queue.transferred_out", "agent.state", "call.ended"],
    again,
    again,
    (live) => {
      const s = document.getElementById("live");
      s.dataset.live = String(live);
      s.textContent = live ? "live" : "reconnecting…";
    },
  );
  // Waits grow by themselves: re-read them every few seconds.
  setInterval(again, 5000);
  await refresh();
}

document.getElementById("view").addEventListener("click", (e) => {
  const table = document.getElementById("table-view").classList.toggle("hidden") === false;
  document.getElementById("cards").classList.toggle("hidden", table);
  e.target.setAttribute("aria-pressed", String(table));
  e.target.textContent = table ? "Card view" : "Table view";
});
document.getElementById("tv").addEventListener("click", (e) => {
  const on = document.body.classList.toggle("tv");
  e.target.setAttribute("aria-pressed", String(on));
  if (on && document.documentElement.requestFullscreen) document.documentElement.requestFullscreen().catch(() => {});
});
document.getElementById("logout").addEventListener("click", Console.logout);
start().catch((e) => { document.getElementById("live").textContent = "error: " + e.message; });
