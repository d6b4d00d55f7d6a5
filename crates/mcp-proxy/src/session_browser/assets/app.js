// The mcp-proxy session browser. Plain DOM code, no framework: every piece of
// session data goes into the page through textContent (never innerHTML).
"use strict";

const TOKEN_KEY = "mcp-proxy-admin-token";
const GAP_MS = 10000; // a pause longer than this is marked in the timeline
const PAGE = 50;

const $ = (id) => document.getElementById(id);

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else if (key === "style") for (const [k, v] of Object.entries(value)) node.style.setProperty(k, v);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

class Unauthorized extends Error {}

async function api(path, options) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(path, Object.assign({ headers }, options || {}));
  if (response.status === 401) throw new Unauthorized("admin token required");
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { const body = await response.json(); if (body.error) message = body.error.message || JSON.stringify(body.error); } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response.json();
}

function status(text) { $("status-line").textContent = text; }

function show(view) {
  for (const id of ["token-view", "list-view", "session-view"]) $(id).hidden = id !== view;
  $("forget-token").hidden = !sessionStorage.getItem(TOKEN_KEY);
}

function duration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
}

function clock(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function short(text, max) { return text.length > max ? text.slice(0, max - 1) + "…" : text; }

function bytes(n) { return n < 1024 ? n + " B" : (n / 1024).toFixed(1) + " KiB"; }

// Lanes: each SSE stream keeps one color for the page's life; messages that
// were not sent on a stream (POST bodies, JSON replies) share one lane.
const NO_STREAM = "(no stream: POST body or JSON reply)";
const lanes = new Map();
function lane(stream) {
  const key = stream || NO_STREAM;
  if (!lanes.has(key)) lanes.set(key, "hsl(" + ((lanes.size * 67 + 200) % 360) + " 60% 45%)");
  return lanes.get(key);
}

// ---- list ---------------------------------------------------------------

const listState = { cursor: null, next: null, pageNo: 1 };

function filterParams() {
  const params = new URLSearchParams();
  const q = $("filter-q").value.trim();
  if (q) params.set("q", q);
  if ($("filter-status").value) params.set("status", $("filter-status").value);
  const protocol = $("filter-protocol").value.trim();
  if (protocol) params.set("protocol", protocol);
  return params;
}

async function loadList() {
  const params = filterParams();
  params.set("limit", String(PAGE));
  if (listState.cursor) params.set("cursor", listState.cursor);
  const page = await api("/ui/api/sessions?" + params);
  const body = $("sessions").tBodies[0];
  body.replaceChildren();
  for (const s of page.sessions) {
    const link = el("a", { href: "#/session/" + encodeURIComponent(s.id), class: "session-link", text: s.id.slice(0, 12) + (s.id.length > 12 ? "…" : "") });
    link.title = s.id;
    const client = (s.client_name || "—") + (s.client_version ? " " + s.client_version : "");
    const upstream = (s.upstream || "—") + (s.upstream_session_id ? " (" + s.upstream_session_id.slice(0, 8) + "…)" : "");
    body.append(el("tr", { "data-session": s.id },
      el("td", { class: "id" }, link),
      el("td", { class: "client", text: client }),
      el("td", { class: "upstream", text: upstream }),
      el("td", { class: "protocol", text: s.protocol_version || "—" }),
      el("td", { class: "status status-" + s.status, text: s.status }),
      el("td", { text: duration(page.now - s.created_at) }),
      el("td", { text: duration(page.now - s.last_activity) }),
      el("td", { class: "num frames", text: String(s.frame_count) })));
  }
  $("list-empty").hidden = page.sessions.length > 0;
  listState.next = page.next_cursor;
  $("page-next").disabled = !page.next_cursor;
  $("page-first").disabled = !listState.cursor;
  $("page-info").textContent = "page " + listState.pageNo + " · " + page.sessions.length + " shown · " + page.scanned + " scanned";
  status("updated " + new Date().toLocaleTimeString());
}

// ---- session ------------------------------------------------------------

const view = { id: null, last: null, lastTime: null, next: null, seen: 0, frameCount: 0, source: null };

function frameItem(f, fresh) {
  const c2s = f.direction === "client_to_server";
  const label = f.method ||
    (f.kind === "response" ? "result for id " + f.rpc_id : f.kind === "error" ? "error for id " + f.rpc_id : f.kind);
  const item = el("li", {
    class: "frame " + (c2s ? "c2s" : "s2c") + (fresh ? " new" : ""),
    "data-frame": f.id,
    "data-stream": f.stream_id || "",
    style: { "--lane": lane(f.stream_id) },
  },
    el("span", { class: "time", text: clock(f.timestamp) }),
    el("span", { class: "dir", text: c2s ? "→" : "←", title: c2s ? "client to server" : "server to client" }),
    el("span", { class: "stream", text: f.stream_id ? "stream " + short(f.stream_id, 18) : c2s ? "POST" : "JSON reply", title: f.stream_id || "" }),
    el("span", { class: "method kind-" + f.kind, text: label }),
    el("span", { class: "size", text: bytes(f.size) }));
  if (f.bridge_form) {
    // Recorded by the protocol-generation bridge in the other side's form.
    item.classList.add("bridged");
    item.append(el("span", { class: "bridged-mark", text: "bridged: " + f.bridge_form + " form",
      title: "translated by the bridge (docs/bridge.md)" }));
  }
  const toggle = el("button", { type: "button", class: "json-toggle", text: "JSON" });
  toggle.addEventListener("click", () => {
    const open = item.querySelector("pre");
    if (open) { open.remove(); return; }
    let text = f.payload;
    try { text = JSON.stringify(JSON.parse(f.payload), null, 2); } catch (_) { /* shown as recorded */ }
    item.append(el("pre", { class: "payload", text }));
  });
  item.append(toggle);
  return item;
}

function appendFrames(frames, fresh) {
  const list = $("timeline");
  for (const f of frames) {
    if (view.lastTime !== null && f.timestamp - view.lastTime > GAP_MS) {
      list.append(el("li", { class: "gap", text: "⋯ " + duration(f.timestamp - view.lastTime) + " without messages" }));
    }
    list.append(frameItem(f, fresh));
    view.last = f.id;
    view.lastTime = f.timestamp;
    view.seen += 1;
    if (fresh) view.frameCount += 1;
  }
  const count = $("fact-frames");
  if (count) count.textContent = String(view.frameCount);
  const legend = $("streams-legend");
  legend.replaceChildren(...[...lanes.entries()].map(([name, color]) =>
    el("span", { class: "stream-chip", style: { "--lane": color }, text: name })));
}

function facts(s, now) {
  const rows = [
    ["client", (s.client_name || "—") + (s.client_version ? " " + s.client_version : "")],
    ["upstream", s.upstream || "—"],
    ["upstream session", s.upstream_session_id || "—"],
    ["protocol", s.protocol_version || "—"],
    ["status", s.status],
    ["age", duration(now - s.created_at)],
    ["expires in", duration(s.expires_at - now)],
    ["frames", String(s.frame_count)],
    ["bound to a principal", s.bound ? "yes" : "no"],
  ];
  $("session-facts").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v, id: "fact-" + k.replace(/ /g, "-") })]));
}

async function loadSession(id) {
  stopTail();
  Object.assign(view, { id, last: null, lastTime: null, next: null, seen: 0 });
  lanes.clear();
  $("timeline").replaceChildren();
  $("session-title").textContent = "Session " + id;
  await loadFrames();
}

async function loadFrames() {
  const params = new URLSearchParams();
  if (view.last) params.set("after", view.last);
  const page = await api("/ui/api/sessions/" + encodeURIComponent(view.id) + "?" + params);
  view.frameCount = page.session.frame_count;
  facts(page.session, page.now);
  if (view.seen === 0 && page.frames.length > 0 && page.session.frame_count > 0) {
    // Frames ever appended minus what the store still holds: trimmed earlier.
    view.trimmedNote = el("li", { class: "trimmed", hidden: true });
    $("timeline").append(view.trimmedNote);
  }
  appendFrames(page.frames, false);
  view.next = page.next_after;
  $("frames-more").hidden = !page.next_after;
  if (!page.next_after && view.trimmedNote) {
    const trimmed = page.session.frame_count - view.seen;
    if (trimmed > 0) {
      view.trimmedNote.textContent = trimmed + " earlier frame(s) were trimmed from the store (max_frames)";
      view.trimmedNote.hidden = false;
    }
  }
  status(view.seen + " frame(s) shown");
}

async function startTail() {
  const base = "/ui/api/sessions/" + encodeURIComponent(view.id);
  const { ticket } = await api(base + "/ticket", { method: "POST" });
  const params = new URLSearchParams();
  if (ticket) params.set("ticket", ticket);
  if (view.last) params.set("after", view.last);
  const source = new EventSource(base + "/tail?" + params);
  view.source = source;
  $("tail-toggle").textContent = "Stop live tail";
  source.addEventListener("open", () => { $("tail-status").textContent = "live"; $("tail-status").className = "live"; });
  source.addEventListener("frame", (event) => {
    const frame = JSON.parse(event.data);
    appendFrames([frame], true);
    status(view.seen + " frame(s) shown · last " + clock(frame.timestamp));
  });
  source.addEventListener("ended", () => {
    // The store removed the session's frames with it: the last ones recorded
    // since the tail's previous poll may be missing here.
    stopTail();
    $("tail-status").textContent = "session ended; frames recorded in its last moment may be missing";
  });
  source.addEventListener("error", () => {
    // The stream ended (lifetime, restart) or the ticket expired: a new ticket.
    if (view.source !== source) return;
    source.close();
    view.source = null;
    $("tail-status").textContent = "reconnecting…";
    setTimeout(() => { if (view.id && $("tail-toggle").textContent.startsWith("Stop")) startTail().catch(fail); }, 2000);
  });
}

function stopTail() {
  if (view.source) view.source.close();
  view.source = null;
  $("tail-toggle").textContent = "Start live tail";
  $("tail-status").textContent = "tail off";
  $("tail-status").className = "";
}

async function endSession(revoke) {
  const what = revoke ? "every session of this session's principal" : "this session";
  if (!window.confirm("End " + what + "? Clients must initialize again.")) return;
  const base = "/ui/api/sessions/" + encodeURIComponent(view.id);
  const result = revoke ? await api(base + "/revoke", { method: "POST" }) : await api(base, { method: "DELETE" });
  stopTail();
  status("ended " + result.ended.length + " session(s)");
  location.hash = "#/";
}

// ---- routing ------------------------------------------------------------

function fail(error) {
  if (error instanceof Unauthorized) { stopTail(); show("token-view"); status("admin token required"); return; }
  status("error: " + error.message);
}

async function route() {
  const match = location.hash.match(/^#\/session\/(.+)$/);
  try {
    if (match) {
      show("session-view");
      await loadSession(decodeURIComponent(match[1]));
    } else {
      stopTail();
      show("list-view");
      await loadList();
    }
  } catch (error) { fail(error); }
}

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token-input").value);
    $("token-input").value = "";
    route();
  });
  $("forget-token").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); route(); });
  $("filter-form").addEventListener("submit", (event) => {
    event.preventDefault();
    Object.assign(listState, { cursor: null, pageNo: 1 });
    loadList().catch(fail);
  });
  $("page-first").addEventListener("click", () => { Object.assign(listState, { cursor: null, pageNo: 1 }); loadList().catch(fail); });
  $("page-next").addEventListener("click", () => {
    if (!listState.next) return;
    Object.assign(listState, { cursor: listState.next, pageNo: listState.pageNo + 1 });
    loadList().catch(fail);
  });
  $("frames-more").addEventListener("click", () => loadFrames().catch(fail));
  $("tail-toggle").addEventListener("click", () => {
    if (view.source || $("tail-toggle").textContent.startsWith("Stop")) stopTail();
    else startTail().catch(fail);
  });
  $("end-session").addEventListener("click", () => endSession(false).catch(fail));
  $("revoke-session").addEventListener("click", () => endSession(true).catch(fail));
  window.addEventListener("hashchange", route);
  route();
});
