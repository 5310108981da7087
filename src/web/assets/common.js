// Switchboard console: the control-plane API with the session cookie (and its CSRF
// token), and the live event stream, which resumes where it stopped after a cut.
"use strict";

const Console = {
  csrf() { return sessionStorage.getItem("sb_csrf") || ""; },

  async api(path, options = {}) {
    const headers = Object.assign({ "Accept": "application/json" }, options.headers || {});
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    if (options.method && options.method !== "GET") headers["X-CSRF-Token"] = Console.csrf();
    const r = await fetch(path, {
      method: options.method || "GET",
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      credentials: "same-origin",
    });
    if (r.status === 401) {
      // The session expired: log in again, then come back here.
      location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
      throw new Error("not logged in");
    }
    const type = r.headers.get("content-type") || "";
    const body = type.includes("json") ? await r.json() : await r.text();
    if (!r.ok) throw new Error((body && body.detail) || r.statusText);
    return body;
  },

  // Follows the event stream. `types` are the event types wanted; `onEvent` gets each,
  // `onOpen` runs on every (re)connection so the page can re-read its state, and
  // `onLive(bool)` tells whether the stream is up. EventSource reconnects by itself and
  // sends the last id it saw, so nothing is missed across a cut.
  follow(types, onEvent, onOpen, onLive) {
    let source = null;
    let retry = null;
    const connect = () => {
      source = new EventSource("/api/v1/events/stream", { withCredentials: true });
      source.onopen = () => { onLive(true); onOpen(); };
      source.onerror = () => {
        onLive(false);
        // A closed stream (e.g. the server restarted and answered 5xx once) is reopened.
        if (source.readyState === EventSource.CLOSED) {
          clearTimeout(retry);
          retry = setTimeout(connect, 1000);
        }
      };
      for (const t of types) source.addEventListener(t, (m) => onEvent(JSON.parse(m.data)));
    };
    connect();
  },

  // Runs `fn` at most once per `ms`, soon after the last call.
  debounce(fn, ms) {
    let t = null;
    return () => { clearTimeout(t); t = setTimeout(fn, ms); };
  },

  pct(v) { return v === null || v === undefined ? "–" : (v * 100).toFixed(0) + "%"; },
  secs(v) {
    if (v === null || v === undefined) return "–";
    const s = Math.round(v);
    return s >= 60 ? Math.floor(s / 60) + "m " + String(s % 60).padStart(2, "0") + "s" : s + "s";
  },

  async logout() {
    try { await Console.api("/api/v1/logout", { method: "POST" }); } catch (e) { /* already out */ }
    sessionStorage.removeItem("sb_csrf");
    location.href = "/login";
  },
};

// A page that broke says so where people look, rather than seeming to wait.
for (const kind of ["error", "unhandledrejection"]) {
  window.addEventListener(kind, (e) => {
    const s = document.getElementById("live");
    if (s) s.textContent = "error: " + (e.message || (e.reason && e.reason.message) || e.reason);
  });
}
