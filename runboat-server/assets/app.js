// runboat web UI: plain JavaScript, no dependencies, served by the binary.
// Pages: "repos" (repository list), "board" (live builds of a repo grouped
// by branch / pull request), "build" (one build). Live updates come from
// /api/v1/build-events (server-sent events), reconnecting with backoff.
"use strict";

const page = document.body.dataset.page;
const params = new URLSearchParams(location.search);
const content = document.getElementById("content");
const conn = document.getElementById("conn");
const filterBox = document.getElementById("filter");
const picker = document.getElementById("repo-picker");
const builds = new Map();

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

function setConn(state, text) {
  conn.className = "conn " + state;
  conn.textContent = text;
}

// Actions: immediate feedback in the card, the status change itself
// arrives through the event stream.
async function act(build, verb, feedback, buttons) {
  buttons.forEach((b) => (b.disabled = true));
  feedback.className = "feedback";
  feedback.textContent = `${verb}…`;
  try {
    const resp = await fetch(`/api/v1/builds/${encodeURIComponent(build.name)}/${verb}`, {
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
      feedback.textContent = `${resp.status}: ${detail}`;
      buttons.forEach((b) => (b.disabled = false));
    }
  } catch (e) {
    feedback.className = "feedback error";
    feedback.textContent = `network error: ${e}`;
    buttons.forEach((b) => (b.disabled = false));
  }
}

function card(build) {
  const c = build.commit_info;
  const st = build.status;
  const feedback = el("p", { class: "feedback" });
  const start = el("button", { disabled: !(st === "stopped" || st === "stopping") }, "start");
  const stop = el("button", { disabled: !(st === "started" || st === "starting") }, "stop");
  const reset = el("button", { disabled: st === "undeploying", title: "initialize again" }, "reset");
  const buttons = [start, stop, reset];
  start.addEventListener("click", () => act(build, "start", feedback, buttons));
  stop.addEventListener("click", () => act(build, "stop", feedback, buttons));
  reset.addEventListener("click", () => {
    if (confirm(`Reset ${build.name}? Its database is initialized again.`)) act(build, "reset", feedback, buttons);
  });
  const api = `/api/v1/builds/${encodeURIComponent(build.name)}`;
  return el(
    "div",
    { class: `card status-${st}`, "data-name": build.name },
    el("p", { class: "name" }, el("a", { href: `/builds/${encodeURIComponent(build.name)}` }, build.name)),
    el("p", {}, el("span", { class: "status" }, st), " · ",
      el("a", { href: build.repo_commit_link, title: c.git_commit }, c.git_commit.slice(0, 8))),
    el("p", { class: "muted" },
      el("span", { "data-time": build.created, title: `created ${build.created}` }, relTime(build.created)),
      build.last_scaled && build.last_scaled !== build.created
        ? el("span", {}, " · scaled ", el("span", { "data-time": build.last_scaled, title: build.last_scaled }, relTime(build.last_scaled)))
        : null),
    el("p", { class: "links" },
      st === "started" ? el("a", { href: build.deploy_link }, "🚪 live") : null,
      st === "started" ? el("a", { href: build.deploy_link_mailhog }, "✉ mail") : null,
      // Logs of a running job or pod are followed live.
      el("a", { href: `${api}/init-log${st === "initializing" ? "?follow" : ""}` }, "init log"),
      st === "started" || st === "stopping" || st === "starting" ? el("a", { href: `${api}/log?follow` }, "log") : null),
    el("p", {}, ...buttons),
    feedback,
  );
}

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

function matchesFilter(b, text) {
  if (!text) return true;
  const c = b.commit_info;
  const hay = [b.name, b.status, c.repo, c.target_branch, c.pr ? `#${c.pr}` : "", c.pr || "", c.git_commit]
    .join(" ")
    .toLowerCase();
  return text
    .toLowerCase()
    .split(/\s+/)
    .every((w) => hay.includes(w));
}

function renderBoard() {
  const text = filterBox.value.trim();
  const rows = new Map();
  for (const b of builds.values()) {
    if (!matchesFilter(b, text)) continue;
    const key = rowKey(b);
    if (!rows.has(key)) rows.set(key, []);
    rows.get(key).push(b);
  }
  const newest = (list) => list.reduce((m, b) => (b.created > m ? b.created : m), "");
  const sorted = [...rows.values()].map((list) => {
    list.sort((a, b) => (a.created < b.created ? 1 : a.created > b.created ? -1 : a.name < b.name ? 1 : -1));
    return list;
  });
  sorted.sort((a, b) => (newest(a) < newest(b) ? 1 : -1));
  const nodes = sorted.map((list) =>
    el("section", { class: "row" },
      el("div", { class: "row-head" }, rowTitle(list[0]), el("span", { class: "muted" }, `${list.length} build${list.length === 1 ? "" : "s"}`)),
      el("div", { class: "cards" }, list.map(card))),
  );
  content.replaceChildren(...(nodes.length ? nodes : [el("p", { class: "empty" }, text ? "No build matches the filter." : "No builds.")]));
}

function renderBuild() {
  const name = document.body.dataset.build;
  const b = builds.get(name);
  if (!b) {
    content.replaceChildren(el("p", { class: "empty" }, "This build does not exist (any more)."));
    return;
  }
  if (params.has("live") && b.status === "started") {
    location.replace(b.deploy_link);
    return;
  }
  const c = b.commit_info;
  const details = el("dl", { class: "details" },
    el("dt", {}, "repository"), el("dd", {}, el("a", { href: `/builds?repo=${encodeURIComponent(c.repo)}` }, c.repo)),
    el("dt", {}, "target branch"), el("dd", {}, el("a", { href: b.repo_target_branch_link }, c.target_branch)),
    el("dt", {}, "pull request"), el("dd", {}, c.pr ? el("a", { href: b.repo_pr_link }, `#${c.pr}`) : "—"),
    el("dt", {}, "commit"), el("dd", {}, el("a", { href: b.repo_commit_link }, c.git_commit)),
    el("dt", {}, "instance"), el("dd", {}, el("a", { href: b.deploy_link }, b.deploy_link)),
    el("dt", {}, "mail catcher"), el("dd", {}, el("a", { href: b.deploy_link_mailhog }, b.deploy_link_mailhog)),
    el("dt", {}, "created"), el("dd", {}, b.created),
    el("dt", {}, "last scaled"), el("dd", {}, b.last_scaled),
  );
  const waiting = params.has("live")
    ? el("p", { class: "muted" }, "The instance opens as soon as the build is started.")
    : null;
  content.replaceChildren(el("div", { class: "cards" }, card(b)), waiting, details);
}

let renderQueued = false;
function render() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    if (page === "build") renderBuild();
    else renderBoard();
  });
}

// Server-sent events with reconnection: exponential backoff from 1 s to
// 30 s; on every (re)connection the server sends the full matching set,
// so the local state is dropped first and no ghost survives a restart.
function connect(query) {
  let delay = 1000;
  let source = null;
  const open = () => {
    setConn("", "connecting…");
    source = new EventSource(`/api/v1/build-events?${query}`);
    source.onopen = () => {
      delay = 1000;
      builds.clear();
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
      if (ev.event === "upd") builds.set(ev.build.name, ev.build);
      else if (ev.event === "del") builds.delete(ev.build.name);
      render();
    };
    source.addEventListener("resync", () => {
      builds.clear();
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

async function reposPage() {
  const repos = await loadRepos();
  let status = {};
  try {
    status = await (await fetch("/api/v1/status")).json();
  } catch (_) {}
  conn.hidden = true;
  const counters = el("div", { class: "counters" },
    ["started", "stopped", "failed", "initializing", "to_initialize", "undeploying", "deployed"].map((k) =>
      el("span", {}, el("span", { class: "muted" }, k.replace("_", " ") + ": "), String(status[k] ?? "?"))));
  const draw = () => {
    const text = filterBox.value.trim().toLowerCase();
    const shown = repos.filter((r) => r.name.includes(text));
    content.replaceChildren(counters,
      shown.length
        ? el("ul", { class: "repos" }, shown.map((r) =>
            el("li", {}, el("a", { href: `/builds?repo=${encodeURIComponent(r.name)}` }, r.name), " ",
              el("a", { class: "muted", href: r.link }, "↗"))))
        : el("p", { class: "empty" }, "No repository has builds yet."));
  };
  filterBox.placeholder = "filter repositories…";
  filterBox.addEventListener("input", draw);
  draw();
}

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
      history.replaceState(null, "", u);
      render();
    });
  }
  connect(q.toString());
  setInterval(() => {
    for (const node of document.querySelectorAll("[data-time]")) node.textContent = relTime(node.dataset.time);
  }, 30000);
}
