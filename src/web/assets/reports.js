// Reports: the KPIs of /api/v1/reports for a chosen slice, range and interval, as a
// table, and the same as CSV to share.
"use strict";

const $ = (id) => document.getElementById(id);
const COLUMNS = [
  ["key", "Key", (r) => r.key], ["interval", "Interval", (r) => r.interval || ""],
  ["offered", "Offered", (r) => r.offered], ["answered", "Answered", (r) => r.answered],
  ["abandoned", "Abandoned", (r) => r.abandoned], ["service_level", "Service level", (r) => Console.pct(r.service_level)],
  ["abandon_rate", "Abandon rate", (r) => Console.pct(r.abandon_rate)], ["asa", "ASA", (r) => Console.secs(r.asa_secs)],
  ["aht", "AHT", (r) => Console.secs(r.aht_secs)], ["acw", "ACW", (r) => Console.secs(r.acw_secs)],
  ["fcr", "FCR (disposition)", (r) => Console.pct(r.fcr_by_disposition)], ["fcr_repeat", "FCR (repeat)", (r) => Console.pct(r.fcr_by_repeat)],
  ["csat", "CSAT", (r) => Console.pct(r.csat)], ["occupancy", "Occupancy", (r) => Console.pct(r.time && r.time.occupancy)],
];

function query() {
  const tz = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const p = new URLSearchParams({ tz });
  if ($("from").value) p.set("from", $("from").value);
  if ($("to").value) p.set("to", $("to").value);
  if ($("interval").value) p.set("interval", $("interval").value);
  return p;
}

async function show() {
  const slice = $("slice").value;
  const p = query();
  const r = await Console.api(`/api/v1/reports/${slice}?${p}`);
  p.set("format", "csv");
  $("csv").href = `/api/v1/reports/${slice}?${p}`;
  $("range").textContent = `${r.from} to ${r.to} (${r.time_zone})`;
  $("head").replaceChildren(...COLUMNS.map(([, label]) => { const th = document.createElement("th"); th.scope = "col"; th.textContent = label; return th; }));
  $("rows").replaceChildren(...[...r.rows, r.total].map((row) => {
    const tr = document.createElement("tr");
    tr.dataset.key = row.key;
    COLUMNS.forEach(([key, , f], i) => {
      const c = document.createElement(i === 0 ? "th" : "td");
      if (i === 0) c.scope = "row";
      c.textContent = String(f(row) ?? "");
      c.dataset.column = key;
      tr.append(c);
    });
    return tr;
  }));
  $("live").textContent = `${r.rows.length} row(s)`;
}

$("ask").addEventListener("submit", (e) => { e.preventDefault(); show().catch((err) => { $("live").textContent = "error: " + err.message; }); });
$("logout").addEventListener("click", Console.logout);
show().catch((e) => { $("live").textContent = "error: " + e.message; });
