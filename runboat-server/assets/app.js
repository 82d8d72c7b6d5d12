// runboat web UI: plain JavaScript, no dependencies, served by the binary.
// Pages: "repos" (repositories with their builds counted by status),
// "board" (live builds grouped by branch / pull request, paginated), "build"
// (one build: card, timeline, init log tail). Live updates come from
// /api/v1/build-events (server-sent events), reconnecting with backoff.
//
// The board is kept fast at OCA scale (thousands of builds) by touching the
// DOM per changed build: each card is made once, keyed by build name, and
// patched in place when its build changes; the rows of the current page are
// reconciled (moved, added, removed) only when the set of builds or the
// page changes, and only the current page's rows and each row's first cards
// exist in the DOM. Events are applied in batches, once per animation frame.
"use strict";

const page = document.body.dataset.page;
const params = new URLSearchParams(location.search);
const content = document.getElementById("content");
const conn = document.getElementById("conn");
const filterBox = document.getElementById("filter");
const picker = document.getElementById("repo-picker");

// Rows (branches / pull requests) per board page, and cards a row shows
// before its "show more" button (each press shows 4 × ROW_CARDS more; five
// cards fill a line of a desktop-wide window).
const PAGE_ROWS = 20;
const ROW_CARDS = 5;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

// Replaces a node's children, skipping absent ones (null, undefined, false):
// `replaceChildren` itself would print them as text ("null").
function fill(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

function setHidden(node, hidden) {
  if (node.hidden !== hidden) node.hidden = hidden;
}

// Sets a node's text only when it differs: no mutation, no layout work.
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function relTime(iso) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return "";
  const s = Math.round((Date.now() - t) / 1000);
  const abs = Math.abs(s);
  const fmt = (n, unit) => `${n} ${unit}${n === 1 ? "" : "s"}`;
  let text;
  if (abs < 45) text = "just now";
  else if (abs < 3600) text = fmt(Math.round(abs / 60), "minute") + " ago";
  else if (abs < 86400) text = fmt(Math.round(abs / 3600), "hour") + " ago";
  else text = fmt(Math.round(abs / 86400), "day") + " ago";
  return text;
}

// "45 s", "3 min 20 s", "2 h 5 min".
function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min${s % 60 ? ` ${s % 60} s` : ""}`;
  const m = Math.round(s / 60);
  return `${Math.floor(m / 60)} h${m % 60 ? ` ${m % 60} min` : ""}`;
}

// The estimate of the wire contract's `eta_seconds`: "ready in ~4 min".
function etaText(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds) || seconds < 0) return "";
  if (seconds < 60) return "ready in less than a minute";
  if (seconds < 5400) return `ready in ~${Math.round(seconds / 60)} min`;
  return `ready in ~${Math.round(seconds / 3600)} h`;
}

function setConn(state, text) {
  conn.className = "conn " + state;
  setText(conn, text);
}

const buildUrl = (name) => `/builds/${encodeURIComponent(name)}`;
const apiUrl = (name) => `/api/v1/builds/${encodeURIComponent(name)}`;

// What an error answer to an action means, in words.
function refusal(verb, status, detail) {
  const admin = verb === "pin" || verb === "unpin";
  if (status === 401) return `401: ${verb} needs ${admin ? "admin " : ""}credentials${detail ? ` (${detail})` : ""}`;
  if (status === 403) return `403: not allowed to ${verb}${detail ? ` (${detail})` : ""}`;
  if (status === 404) {
    return admin
      ? `404: ${detail || "not found"} (this server may not support pinning, or the build is gone)`
      : `404: ${detail || "build not found"}`;
  }
  return `${status}: ${detail}`;
}

// Actions: immediate feedback in the card, the status change itself
// arrives through the event stream.
async function act(entry, verb) {
  const { feedback, buttons } = entry.parts;
  buttons.forEach((b) => (b.disabled = true));
  feedback.className = "feedback";
  feedback.textContent = `${verb}…`;
  const restore = () => patchButtons(entry);
  try {
    const resp = await fetch(`${apiUrl(entry.build.name)}/${verb}`, {
      method: "POST",
      credentials: "same-origin",
    });
    let detail = "";
    try {
      detail = (await resp.json()).detail || "";
    } catch (_) {
      detail = resp.statusText;
    }
    if (resp.ok) {
      feedback.textContent = detail || `${verb} requested`;
    } else {
      feedback.className = "feedback error";
      feedback.setAttribute("role", "alert");
      feedback.textContent = refusal(verb, resp.status, detail);
      restore();
    }
  } catch (e) {
    feedback.className = "feedback error";
    feedback.setAttribute("role", "alert");
    feedback.textContent = `network error: ${e}`;
    restore();
  }
}

// ---------------------------------------------------------------- cards --

// Card entries by build name: {node, parts, build}. A card is made once and
// patched in place afterwards, so an untouched card stays the same node.
const cards = new Map();

function makeCard(build) {
  const entry = { build, node: null, parts: null };
  const name = el("a", { href: buildUrl(build.name) }, build.name);
  const status = el("span", { class: "status" });
  const pinned = el("span", { class: "badge pinned", hidden: true }, "pinned");
  const commit = el("a", {});
  const created = el("span", {});
  const scaledTime = el("span", {});
  const scaled = el("span", {}, " · scaled ", scaledTime);
  const note = el("p", { class: "note", hidden: true });
  const links = el("p", { class: "links" });
  const start = el("button", { type: "button" }, "start");
  const stop = el("button", { type: "button" }, "stop");
  const reset = el("button", { type: "button", title: "initialize again" }, "reset");
  // Pinning is an admin's deliberate act on one build: offered on the
  // build's own page, not on every card of the board.
  const pin = page === "build" ? el("button", { type: "button", class: "pin" }, "pin") : null;
  const feedback = el("p", { class: "feedback", "aria-live": "polite" });
  start.addEventListener("click", () => act(entry, "start"));
  stop.addEventListener("click", () => act(entry, "stop"));
  reset.addEventListener("click", () => {
    if (confirm(`Reset ${entry.build.name}? Its database is initialized again.`)) act(entry, "reset");
  });
  if (pin) pin.addEventListener("click", () => act(entry, entry.build.pinned ? "unpin" : "pin"));
  const buttons = [start, stop, reset, pin].filter(Boolean);
  entry.parts = { status, pinned, commit, created, scaled, scaledTime, note, links, start, stop, reset, pin, buttons, feedback, linksKey: null };
  entry.node = el(
    "div",
    { class: "card", "data-name": build.name },
    el("p", { class: "name" }, name),
    el("p", {}, status, " · ", commit, " ", pinned),
    el("p", { class: "muted" }, created, scaled),
    note,
    links,
    el("p", { class: "actions" }, buttons),
    feedback,
  );
  patchCard(entry, build);
  cards.set(build.name, entry);
  return entry;
}

function patchButtons(entry) {
  const st = entry.build.status;
  const p = entry.parts;
  // Only what differs is written (an equal write is still a DOM mutation).
  const set = (button, disabled) => {
    if (button.disabled !== disabled) button.disabled = disabled;
  };
  set(p.start, !(st === "stopped" || st === "stopping"));
  set(p.stop, !(st === "started" || st === "starting"));
  set(p.reset, st === "undeploying");
  if (p.pin) {
    set(p.pin, false);
    setText(p.pin, entry.build.pinned ? "unpin" : "pin");
    const title = entry.build.pinned ? "unpin: let limits and supersede undeploy it again (admin)" : "pin: keep it deployed (admin)";
    if (p.pin.title !== title) p.pin.title = title;
  }
}

// Updates a card to `build`, touching only what changed.
function patchCard(entry, build) {
  const old = entry.build;
  entry.build = build;
  const p = entry.parts;
  const st = build.status;
  const c = build.commit_info;
  const cls = `card status-${st}`;
  if (entry.node.className !== cls) entry.node.className = cls;
  setText(p.status, st);
  setHidden(p.pinned, !build.pinned);
  if (p.commit.getAttribute("href") !== build.repo_commit_link) {
    p.commit.href = build.repo_commit_link;
    p.commit.title = c.git_commit;
    p.commit.textContent = c.git_commit.slice(0, 8);
  }
  if (p.created.dataset.time !== build.created) {
    p.created.dataset.time = build.created;
    p.created.title = `created ${build.created}`;
    setText(p.created, relTime(build.created));
  }
  const scaledShown = Boolean(build.last_scaled && build.last_scaled !== build.created);
  setHidden(p.scaled, !scaledShown);
  if (scaledShown && p.scaledTime.dataset.time !== build.last_scaled) {
    p.scaledTime.dataset.time = build.last_scaled;
    p.scaledTime.title = build.last_scaled;
    setText(p.scaledTime, relTime(build.last_scaled));
  }
  // Estimate and supersede notes (fields of newer servers, absent here when
  // unknown).
  const waiting = st === "initializing" || st === "starting";
  const eta = waiting ? etaText(build.eta_seconds) : "";
  const noteKey = `${eta}|${build.superseded_by || ""}`;
  if (p.note.dataset.key !== noteKey) {
    p.note.dataset.key = noteKey;
    fill(p.note,
      eta ? el("span", { class: "eta" }, eta) : null,
      eta && build.superseded_by ? " · " : null,
      build.superseded_by
        ? el("span", { class: "superseded" }, "superseded by ", el("a", { href: buildUrl(build.superseded_by) }, build.superseded_by))
        : null,
    );
    setHidden(p.note, !noteKey.replace("|", ""));
  }
  // Logs of a running job or pod are followed live.
  const linksKey = `${st}|${build.deploy_link}`;
  if (p.linksKey !== linksKey) {
    p.linksKey = linksKey;
    const api = apiUrl(build.name);
    fill(p.links,
      st === "started" ? el("a", { href: build.deploy_link }, "live") : null,
      st === "started" ? el("a", { href: build.deploy_link_mailhog }, "mail") : null,
      el("a", { href: `${api}/init-log${st === "initializing" ? "?follow" : ""}` }, "init log"),
      st === "started" || st === "stopping" || st === "starting" ? el("a", { href: `${api}/log?follow` }, "log") : null,
    );
  }
  // A status change ends the previous action's feedback only if it was a
  // success note; an error stays until the next action.
  if (old && old.status !== st && p.feedback.className === "feedback") setText(p.feedback, "");
  patchButtons(entry);
}

function cardFor(build) {
  const entry = cards.get(build.name);
  if (!entry) return makeCard(build).node;
  if (entry.build !== build) patchCard(entry, build);
  return entry.node;
}

// Puts exactly `nodes`, in order, into `parent`, moving only the nodes out
// of place and removing the others.
function reconcile(parent, nodes) {
  let i = 0;
  for (const node of nodes) {
    const at = parent.childNodes[i];
    if (at !== node) parent.insertBefore(node, at || null);
    i++;
  }
  while (parent.childNodes.length > nodes.length) parent.lastChild.remove();
}

// ---------------------------------------------------------------- board --

const builds = new Map();
// Build names by row key: a build never changes row (its repo, branch and
// pull request are part of its identity).
const rowMembers = new Map();
const rowViews = new Map();
// How many cards each row shows, when more than ROW_CARDS.
const rowShown = new Map();
const changed = new Set();
let structureDirty = true;
let currentPage = Math.max(1, parseInt(params.get("page") || "1", 10) || 1);
// After a (re)connection the server sends the whole matching set again:
// until the stream is quiet, the builds of before that were not sent again
// are kept (no flash of an empty board, no card made twice), then dropped.
let stale = null;
let staleTimer = null;

function rowKey(b) {
  const c = b.commit_info;
  return c.pr ? `${c.repo}#${c.pr}` : `${c.repo}@${c.target_branch}`;
}

function rowTitle(b) {
  const c = b.commit_info;
  const title = el("span", { class: "title" });
  if (!params.get("repo")) title.append(c.repo, " ");
  if (c.pr) {
    title.append(el("a", { href: b.repo_pr_link }, `PR #${c.pr}`), " to ");
  }
  title.append(el("a", { href: b.repo_target_branch_link }, c.target_branch));
  return title;
}

function matchesFilter(b, words) {
  if (!words.length) return true;
  const c = b.commit_info;
  const hay = [b.name, b.status, c.repo, c.target_branch, c.pr ? `#${c.pr}` : "", c.pr || "", c.git_commit, b.pinned ? "pinned" : ""]
    .join(" ")
    .toLowerCase();
  return words.every((w) => hay.includes(w));
}

const newestFirst = (a, b) => (a.created < b.created ? 1 : a.created > b.created ? -1 : a.name < b.name ? 1 : -1);

function upsert(build) {
  const had = builds.get(build.name);
  builds.set(build.name, build);
  if (stale) stale.delete(build.name);
  if (!had) {
    const key = rowKey(build);
    if (!rowMembers.has(key)) rowMembers.set(key, new Set());
    rowMembers.get(key).add(build.name);
    structureDirty = true;
  } else if (had.created !== build.created) {
    structureDirty = true;
  }
  changed.add(build.name);
}

function remove(name) {
  const had = builds.get(name);
  if (!had) return;
  builds.delete(name);
  const key = rowKey(had);
  const members = rowMembers.get(key);
  if (members) {
    members.delete(name);
    if (!members.size) rowMembers.delete(key);
  }
  cards.delete(name);
  structureDirty = true;
}

function pageUrl(n) {
  const u = new URL(location.href);
  if (n > 1) u.searchParams.set("page", String(n));
  else u.searchParams.delete("page");
  return u.pathname + u.search;
}

function pager(pages) {
  if (pages <= 1) return null;
  const go = (n) => (e) => {
    e.preventDefault();
    currentPage = n;
    history.pushState(null, "", pageUrl(n));
    structureDirty = true;
    render();
    window.scrollTo(0, 0);
  };
  const link = (n, text, rel) =>
    n >= 1 && n <= pages
      ? el("a", { href: pageUrl(n), rel, onclick: go(n) }, text)
      : el("span", { class: "muted", "aria-disabled": "true" }, text);
  return el("nav", { class: "pager", "aria-label": "pages" },
    link(currentPage - 1, "← newer", "prev"),
    el("span", { class: "page-of" }, `page ${currentPage} of ${pages}`),
    link(currentPage + 1, "older →", "next"));
}

function rowView(key) {
  let view = rowViews.get(key);
  if (!view) {
    const count = el("span", { class: "muted count" });
    const box = el("div", { class: "cards" });
    const more = el("button", { type: "button", class: "more" });
    more.addEventListener("click", () => {
      rowShown.set(key, (rowShown.get(key) || ROW_CARDS) + 4 * ROW_CARDS);
      structureDirty = true;
      render();
    });
    view = { key, count, box, more, head: null, section: el("section", { class: "row", "data-row": key }) };
    rowViews.set(key, view);
  }
  return view;
}

// Rebuilds the page's structure from the builds: O(builds) to group and
// sort (no DOM), then DOM work only for the rows and cards of the page.
function layout() {
  const words = filterBox.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
  const rows = [];
  for (const [key, names] of rowMembers) {
    const list = [];
    let newest = "";
    for (const name of names) {
      const b = builds.get(name);
      if (!b || !matchesFilter(b, words)) continue;
      list.push(b);
      if (b.created > newest) newest = b.created;
    }
    if (list.length) rows.push({ key, list, newest });
  }
  rows.sort((a, b) => (a.newest < b.newest ? 1 : a.newest > b.newest ? -1 : a.key < b.key ? -1 : 1));
  const pages = Math.max(1, Math.ceil(rows.length / PAGE_ROWS));
  const pageNo = Math.min(currentPage, pages);
  const shown = rows.slice((pageNo - 1) * PAGE_ROWS, pageNo * PAGE_ROWS);
  const sections = shown.map(({ key, list }) => {
    list.sort(newestFirst);
    const view = rowView(key);
    if (!view.head) {
      view.head = el("div", { class: "row-head" }, rowTitle(list[0]), view.count);
      view.section.append(view.head, view.box, view.more);
    }
    setText(view.count, `${list.length} build${list.length === 1 ? "" : "s"}`);
    const limit = rowShown.get(key) || ROW_CARDS;
    reconcile(view.box, list.slice(0, limit).map(cardFor));
    const hidden = list.length - limit;
    view.more.hidden = hidden <= 0;
    if (hidden > 0) setText(view.more, `show ${Math.min(hidden, 4 * ROW_CARDS)} more (${hidden} not shown)`);
    return view.section;
  });
  // Views of rows gone from the page are dropped (their cards too, unless
  // shown elsewhere): memory follows the page, not the history.
  const onPage = new Set(shown.map((r) => r.key));
  for (const key of rowViews.keys()) if (!onPage.has(key)) rowViews.delete(key);
  const visible = new Set();
  for (const s of sections) for (const c of s.querySelectorAll(".card[data-name]")) visible.add(c.dataset.name);
  for (const name of cards.keys()) if (!visible.has(name)) cards.delete(name);
  const nodes = sections.length
    ? [pager(pages), ...sections, pager(pages)].filter(Boolean)
    : [el("p", { class: "empty" }, words.length ? "No build matches the filter." : "No builds.")];
  // The pager and the empty note are cheap and made anew; rows are kept.
  reconcile(content, nodes);
}

function flushBoard() {
  const filtering = filterBox.value.trim() !== "";
  for (const name of changed) {
    const b = builds.get(name);
    const entry = cards.get(name);
    // A status change can move a build in or out of a filtered view.
    if (filtering) structureDirty = true;
    if (b && entry && entry.build !== b) patchCard(entry, b);
  }
  changed.clear();
  if (structureDirty) {
    structureDirty = false;
    layout();
  }
}

// ------------------------------------------------------------ build page --

let buildDetailsKey = null;
let timelineFetch = null;
let logTimer = null;
let logStatus = null;

function iso(t) {
  return typeof t === "string" && !Number.isNaN(Date.parse(t)) ? t : null;
}

function timelineItems(b, tl) {
  const items = [];
  const at = (t) => Date.parse(t) / 1000;
  const add = (label, t, extra) =>
    items.push(el("li", {}, el("span", { class: "when" }, el("time", { datetime: t, title: t }, t.replace("T", " ").replace("Z", " UTC"))), " ",
      el("span", { class: "what" }, label), extra ? el("span", { class: "muted" }, ` (${extra})`) : null));
  const waiting = b.status === "initializing" || b.status === "starting";
  const eta = waiting ? etaText(b.eta_seconds) : "";
  if (!tl) {
    if (iso(b.created)) add("created", b.created);
    if (iso(b.last_scaled) && b.last_scaled !== b.created) add("last started or stopped", b.last_scaled);
    if (eta) items.push(el("li", { class: "eta" }, eta));
    return items;
  }
  const created = iso(tl.created) || iso(b.created);
  if (created) add("created", created);
  const initStarted = iso(tl.init_started);
  if (initStarted) add("initialization started", initStarted, created ? `waited ${duration(at(initStarted) - at(created))}` : "");
  const initFinished = iso(tl.init_finished);
  if (initFinished) {
    add(b.status === "failed" ? "initialization failed" : "initialization finished", initFinished,
      initStarted ? `took ${duration(at(initFinished) - at(initStarted))}` : "");
  } else if (initStarted && b.status === "initializing") {
    items.push(el("li", { class: "muted" }, `initializing for ${duration(Date.now() / 1000 - at(initStarted))}`));
  }
  if (eta) items.push(el("li", { class: "eta" }, eta));
  const started = iso(tl.started);
  if (started) add("started", started);
  const stopped = iso(tl.stopped);
  if (stopped) add("stopped", stopped, started && at(stopped) > at(started) ? `ran ${duration(at(stopped) - at(started))}` : "");
  return items;
}

// The single-build answer carries the timeline (newer servers); fetched
// when the build changes.
let timelineAgain = false;
async function loadTimeline(name, box) {
  // One fetch at a time; a change during it fetches once more after it.
  if (timelineFetch) {
    timelineAgain = true;
    return;
  }
  timelineAgain = false;
  timelineFetch = (async () => {
    try {
      const resp = await fetch(apiUrl(name), { credentials: "same-origin" });
      if (!resp.ok) return;
      const full = await resp.json();
      const list = el("ol", { class: "timeline" }, timelineItems(full, full.timeline));
      fill(box, el("h2", {}, "Timeline"), list,
        full.timeline ? null : el("p", { class: "muted" }, "This server does not report initialization times."));
    } catch (_) {
      // The card and the event stream say enough; the timeline waits for
      // the next change.
    } finally {
      timelineFetch = null;
      if (timelineAgain) loadTimeline(name, box);
    }
  })();
}

// The end of the initialization log (a bounded, non-following read),
// refreshed while the build initializes.
async function loadInitLog(name, pre, note) {
  try {
    const resp = await fetch(`${apiUrl(name)}/init-log?tail_bytes=16384&ansi=0`, {
      headers: { Accept: "text/plain" },
      credentials: "same-origin",
    });
    const text = await resp.text();
    if (resp.ok) {
      setText(note, "");
      setText(pre, text || "(empty)");
      pre.hidden = false;
      pre.scrollTop = pre.scrollHeight;
    } else {
      pre.hidden = true;
      let detail = text;
      try {
        detail = JSON.parse(text).detail || text;
      } catch (_) {}
      setText(note, resp.status === 404 ? `No initialization log (yet): ${detail}.` : `The log could not be read (${resp.status}): ${detail}`);
    }
  } catch (e) {
    setText(note, `The log could not be read: ${e}`);
  }
}

function scheduleLog(b, pre, note) {
  // Once per status change, and every 5 s while initializing.
  if (logStatus === b.status && logTimer) return;
  logStatus = b.status;
  clearTimeout(logTimer);
  logTimer = null;
  const tick = async () => {
    await loadInitLog(b.name, pre, note);
    const current = builds.get(b.name);
    logTimer = current && current.status === "initializing" ? setTimeout(tick, 5000) : null;
  };
  tick();
}

const buildView = { card: null, details: null, timeline: null, log: null, pre: null, note: null, waiting: null };

function renderBuild() {
  changed.clear();
  const name = document.body.dataset.build;
  const b = builds.get(name);
  if (!b) {
    if (buildView.card) buildView.card = null;
    fill(content, el("p", { class: "empty" }, "This build does not exist (any more)."));
    return;
  }
  if (params.has("live") && b.status === "started") {
    location.replace(b.deploy_link);
    return;
  }
  const c = b.commit_info;
  if (!buildView.card) {
    buildView.card = el("div", { class: "cards" });
    buildView.details = el("dl", { class: "details" });
    buildView.timeline = el("section", { class: "timeline-box", "aria-label": "timeline" });
    buildView.pre = el("pre", { class: "log-tail", hidden: true, tabindex: "0" });
    buildView.note = el("p", { class: "muted" });
    buildView.log = el("section", { class: "log-box" },
      el("h2", {}, "Initialization log ", el("span", { class: "muted" }, "(end)"), " ",
        el("a", { href: `${apiUrl(name)}/init-log` }, "whole log")),
      buildView.note, buildView.pre);
    buildView.waiting = params.has("live") ? el("p", { class: "muted" }, "The instance opens as soon as the build is started.") : null;
    fill(content, ...[buildView.card, buildView.waiting, buildView.details, buildView.timeline, buildView.log].filter(Boolean));
  }
  reconcile(buildView.card, [cardFor(b)]);
  const key = JSON.stringify(b);
  if (key !== buildDetailsKey) {
    buildDetailsKey = key;
    const row = (term, ...value) => [el("dt", {}, term), el("dd", {}, ...value)];
    fill(buildView.details,
      ...row("repository", el("a", { href: `/builds?repo=${encodeURIComponent(c.repo)}` }, c.repo)),
      ...row("target branch", el("a", { href: b.repo_target_branch_link }, c.target_branch)),
      ...row("pull request", c.pr ? el("a", { href: b.repo_pr_link }, `#${c.pr}`) : "—"),
      ...row("commit", el("a", { href: b.repo_commit_link }, c.git_commit)),
      ...row("instance", el("a", { href: b.deploy_link }, b.deploy_link)),
      ...row("mail catcher", el("a", { href: b.deploy_link_mailhog }, b.deploy_link_mailhog)),
      ...row("created", b.created),
      ...row("last scaled", b.last_scaled || "—"),
      ...(b.pinned ? row("pinned", "yes: limits and supersede leave it deployed") : []),
      ...(b.superseded_by ? row("superseded by", el("a", { href: buildUrl(b.superseded_by) }, b.superseded_by)) : []),
    );
    loadTimeline(name, buildView.timeline);
  }
  scheduleLog(b, buildView.pre, buildView.note);
}

// --------------------------------------------------------------- render --

let renderQueued = false;
function render() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    if (page === "build") renderBuild();
    else flushBoard();
  });
}

function beginResync() {
  // What we have becomes stale; it stays shown until the server has sent
  // the whole set again (the stream is quiet for a moment), then whatever
  // was not sent again is dropped.
  stale = new Set(builds.keys());
  clearTimeout(staleTimer);
  staleTimer = setTimeout(endResync, 1500);
}

function endResync() {
  clearTimeout(staleTimer);
  staleTimer = null;
  if (!stale) return;
  for (const name of stale) remove(name);
  stale = null;
  render();
}

// Server-sent events with reconnection: exponential backoff from 1 s to
// 30 s; on every (re)connection the server sends the full matching set,
// so builds not sent again are dropped and no ghost survives a restart.
function connect(query) {
  let delay = 1000;
  let source = null;
  const open = () => {
    setConn("", "connecting…");
    source = new EventSource(`/api/v1/build-events?${query}`);
    source.onopen = () => {
      delay = 1000;
      beginResync();
      setConn("ok", "live");
      render();
    };
    source.onmessage = (msg) => {
      let ev;
      try {
        ev = JSON.parse(msg.data);
      } catch (_) {
        return;
      }
      if (ev.event === "upd") upsert(ev.build);
      else if (ev.event === "del") remove(ev.build.name);
      if (stale) {
        // Still receiving the set: wait for the quiet moment again.
        clearTimeout(staleTimer);
        staleTimer = setTimeout(endResync, 400);
      }
      render();
    };
    source.addEventListener("resync", () => {
      beginResync();
      render();
    });
    source.onerror = () => {
      source.close();
      setConn("down", `disconnected, retrying in ${Math.round(delay / 1000)} s`);
      setTimeout(open, delay);
      delay = Math.min(delay * 2, 30000);
    };
  };
  open();
}

// ---------------------------------------------------------- repos page --

async function loadRepos() {
  try {
    const repos = await (await fetch("/api/v1/repos")).json();
    const current = (params.get("repo") || "").toLowerCase();
    for (const r of repos) {
      picker.append(el("option", { value: r.name, selected: r.name === current }, r.name));
    }
    // A repo without builds yet is not listed: still name the one shown.
    if (current && !repos.some((r) => r.name === current)) {
      picker.append(el("option", { value: current, selected: true }, current));
    }
    return repos;
  } catch (_) {
    return [];
  }
}

picker.addEventListener("change", () => {
  location.href = picker.value ? `/builds?repo=${encodeURIComponent(picker.value)}` : "/builds";
});

const STATUS_COLUMNS = ["started", "stopped", "initializing", "failed", "starting", "stopping", "undeploying"];

async function reposPage() {
  loadRepos();
  conn.hidden = true;
  const sortKeys = ["activity", "name", "builds", ...STATUS_COLUMNS];
  let sortBy = sortKeys.includes(params.get("sort")) ? params.get("sort") : "activity";
  let summaries = [];
  let status = {};
  const counters = el("div", { class: "counters" });
  const table = el("table", { class: "repos" });
  const empty = el("p", { class: "empty" }, "No repository has builds yet.");
  const shownNote = el("p", { class: "muted" });
  const sortButton = (key, label) =>
    el("button", { type: "button", class: "sort", "data-sort": key, "aria-pressed": String(sortBy === key), onclick: () => {
      sortBy = key;
      const u = new URL(location.href);
      if (key === "activity") u.searchParams.delete("sort");
      else u.searchParams.set("sort", key);
      history.replaceState(null, "", u);
      draw();
    } }, label);
  const draw = () => {
    fill(counters, ...["started", "stopped", "failed", "initializing", "to_initialize", "undeploying", "deployed"].map((k) =>
      el("span", {}, el("span", { class: "muted" }, k.replace("_", " ") + ": "), String(status[k] ?? "?"))));
    const text = filterBox.value.trim().toLowerCase();
    const shown = summaries.filter((r) => r.name.includes(text));
    const value = (r) => (sortBy === "name" ? r.name : sortBy === "builds" ? r.builds : sortBy === "activity" ? r.last_activity : r.counts[sortBy] || 0);
    shown.sort((a, b) => {
      const va = value(a), vb = value(b);
      if (va === vb) return a.name < b.name ? -1 : 1;
      // Names ascending; numbers and times descending (most first).
      return sortBy === "name" ? (va < vb ? -1 : 1) : va < vb ? 1 : -1;
    });
    const head = el("tr", {},
      el("th", { scope: "col" }, sortButton("name", "repository")),
      el("th", { scope: "col" }, sortButton("builds", "builds")),
      STATUS_COLUMNS.map((s) => el("th", { scope: "col" }, sortButton(s, s))),
      el("th", { scope: "col" }, sortButton("activity", "latest activity")));
    const rows = shown.map((r) =>
      el("tr", { "data-repo": r.name },
        el("th", { scope: "row" }, el("a", { href: `/builds?repo=${encodeURIComponent(r.name)}` }, r.name), " ",
          el("a", { class: "muted gh", href: r.link, title: `${r.name} on GitHub` }, "GitHub")),
        el("td", { class: "num" }, String(r.builds)),
        STATUS_COLUMNS.map((s) => el("td", { class: `num${r.counts[s] ? ` has-${s}` : " zero"}` }, String(r.counts[s] || 0))),
        el("td", {}, el("time", { datetime: r.last_activity, title: r.last_activity, "data-time": r.last_activity }, relTime(r.last_activity)))));
    fill(table, el("thead", {}, head), el("tbody", {}, rows));
    setText(shownNote, text ? `${shown.length} of ${summaries.length} repositories` : `${summaries.length} repositories`);
    fill(content, counters, ...(summaries.length ? [shownNote, table] : [empty]));
  };
  const refresh = async () => {
    try {
      const [s, st] = await Promise.all([fetch("/api/v1/repos/summary"), fetch("/api/v1/status")]);
      if (s.ok) summaries = await s.json();
      if (st.ok) status = await st.json();
    } catch (_) {
      // Kept: the previous figures, refreshed at the next tick.
    }
    draw();
  };
  filterBox.placeholder = "filter repositories…";
  filterBox.addEventListener("input", draw);
  await refresh();
  // Counts move with the builds; a light answer (one line per repository)
  // polled while the page is visible.
  setInterval(() => {
    if (!document.hidden) refresh();
  }, 15000);
}

// ---------------------------------------------------------------- start --

if (page === "repos") {
  reposPage();
} else {
  loadRepos();
  const q = new URLSearchParams();
  if (page === "build") {
    q.set("build_name", document.body.dataset.build);
    filterBox.hidden = true;
  } else {
    for (const k of ["repo", "target_branch", "branch", "pr", "status"]) {
      if (params.get(k)) q.set(k, params.get(k));
    }
    filterBox.value = params.get("q") || "";
    filterBox.addEventListener("input", () => {
      const u = new URL(location.href);
      if (filterBox.value) u.searchParams.set("q", filterBox.value);
      else u.searchParams.delete("q");
      // A new filter starts at the first page.
      u.searchParams.delete("page");
      currentPage = 1;
      history.replaceState(null, "", u);
      structureDirty = true;
      render();
    });
    window.addEventListener("popstate", () => {
      currentPage = Math.max(1, parseInt(new URLSearchParams(location.search).get("page") || "1", 10) || 1);
      structureDirty = true;
      render();
    });
  }
  connect(q.toString());
  setInterval(() => {
    for (const node of document.querySelectorAll("[data-time]")) setText(node, relTime(node.dataset.time));
  }, 30000);
}
