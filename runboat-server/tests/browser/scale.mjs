// Headless Chromium test of the runboat-server web UI at OCA scale, driven
// by tests/it/browser.rs (board_stays_fast_at_oca_scale), which seeds the
// simulated cluster with thousands of builds in ~150 repositories and
// starts the server on a real socket.
//
// 1. The board of all repositories loads every build, shows one page of
//    rows (bounded DOM), and pages forwards and back.
// 2. A burst of 100 starts (sent from here, not the page, so the page only
//    renders): the page must apply every change, touch only the changed
//    builds' cards (every other card stays the same node, unmutated), and
//    the long tasks and frame gaps it measured are printed (a benchmark
//    figure, not an assertion).
// 3. A large repository's board: "show more" grows a row.
// 4. The repositories page: one row per repository with counts by status.
// 5. A build page: card, timeline, init-log tail, no stray "null".
// Screenshots of the board, the repositories page and the build page go to
// RUNBOAT_SCREENSHOTS (board-scale.png, repos-scale.png, build-scale.png,
// build-timeline-scale.png).
// 6. The build page renders a reported timeline and estimate (the server's
//    single-build answer amended in the browser: this server has no such
//    fields yet); so do a card's "superseded by", "pinned" and estimate.
//
// Every wait is a condition with a deadline; a failure exits non-zero with
// the reason and saves …-failure.png.
//
// Environment (all required):
//   RUNBOAT_URL, RUNBOAT_SCREENSHOTS, RUNBOAT_CHROMIUM,
//   RUNBOAT_EXPECT_BUILDS, RUNBOAT_EXPECT_REPOS,
//   RUNBOAT_BIG_REPO, RUNBOAT_BIG_REPO_BUILDS

import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { chromium } from "playwright-core";

import { env as sharedEnv, run } from "./common.mjs";

const env = (name) => sharedEnv("scale.mjs", name);

const base = env("RUNBOAT_URL");
const shots = env("RUNBOAT_SCREENSHOTS");
const executablePath = env("RUNBOAT_CHROMIUM");
const expectBuilds = Number(env("RUNBOAT_EXPECT_BUILDS"));
const expectRepos = Number(env("RUNBOAT_EXPECT_REPOS"));
const bigRepo = env("RUNBOAT_BIG_REPO");
const bigRepoBuilds = Number(env("RUNBOAT_BIG_REPO_BUILDS"));
// The admin's credentials, given only when the server asks (pin).
const admin = { username: env("RUNBOAT_ADMIN_USER"), password: env("RUNBOAT_ADMIN_PASSWORD"), send: "unauthorized" };

const BURST = 100;
// Deadlines: these only bound a hang.
const PAGE_READY = 60_000;
const BURST_DONE = 90_000;
const WHOLE_TEST = 280_000;

function log(msg) {
  console.log(`[scale] ${msg}`);
}

function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

// Installed before the page's own script: long tasks (PerformanceObserver
// 'longtask') and the gaps between animation frames, kept while
// `__perf.recording` is set.
function perfRecorder() {
  const perf = (window.__perf = { longtasks: [], frames: [], recording: false, unsupported: null });
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) perf.longtasks.push({ start: e.startTime, duration: e.duration });
    }).observe({ type: "longtask", buffered: true });
  } catch (e) {
    perf.unsupported = String(e);
  }
  let last = 0;
  const frame = (t) => {
    if (perf.recording && last) perf.frames.push(t - last);
    last = t;
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
}

async function api(path, init) {
  const resp = await fetch(`${base}${path}`, init);
  const text = await resp.text();
  if (!resp.ok) throw new Error(`${init?.method ?? "GET"} ${path}: ${resp.status} ${text}`);
  return JSON.parse(text);
}

const pct = (sorted, p) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] : 0);
const ms = (x) => `${x.toFixed(1)} ms`;

function figures(longtasks, frames) {
  const lt = longtasks.map((t) => t.duration).sort((a, b) => a - b);
  const fr = [...(frames ?? [])].sort((a, b) => a - b);
  const tasks =
    `long tasks: ${lt.length} (max ${ms(lt.at(-1) ?? 0)}, total ${ms(lt.reduce((a, b) => a + b, 0))}, ` +
    `over 50 ms: ${lt.filter((d) => d > 50).length})`;
  if (!frames) return tasks;
  return `${tasks}; frames: ${fr.length} (median ${ms(pct(fr, 50))}, p95 ${ms(pct(fr, 95))}, max ${ms(fr.at(-1) ?? 0)})`;
}

async function main() {
  const profile = mkdtempSync(join(tmpdir(), "runboat-chromium-"));
  mkdirSync(shots, { recursive: true });
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    httpCredentials: admin,
    viewport: { width: 1280, height: 900 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const pageErrors = [];
  let allowLogless = null;
  let page;
  try {
    page = context.pages()[0] ?? (await context.newPage());
    page.on("pageerror", (e) => pageErrors.push(`page error: ${e.message}`));
    // The browser's own favicon probe (the page declares no icon), and the
    // 404 of a build without an init log (its page says so; checked below).
    const probe = (url) => {
      const path = new URL(url, base).pathname;
      return (
        path === "/favicon.ico" ||
        (allowLogless && path === `/api/v1/builds/${allowLogless}/init-log`) ||
        (allowLogless && path === `/api/v1/builds/${allowLogless}/pin`)
      );
    };
    page.on("console", (m) => {
      const url = m.location().url;
      if (m.type() === "error" && !(url && probe(url))) pageErrors.push(`console error: ${m.text()} (${url})`);
    });
    page.on("response", (r) => {
      if (r.status() >= 400 && !probe(r.url())) pageErrors.push(`HTTP ${r.status()} for ${r.url()}`);
    });
    await page.addInitScript(perfRecorder);

    // 1. The board of every repository.
    const t0 = Date.now();
    await page.goto(`${base}/builds`);
    await page.waitForSelector("#conn.ok", { timeout: PAGE_READY });
    await page.waitForFunction((n) => builds.size === n && document.querySelector(".card[data-name]"), expectBuilds, {
      timeout: PAGE_READY,
    });
    await page.waitForSelector("nav.pager .page-of", { timeout: PAGE_READY });
    const loadMs = Date.now() - t0;
    const load = await page.evaluate(() => ({
      longtasks: window.__perf.longtasks,
      unsupported: window.__perf.unsupported,
      cards: document.querySelectorAll(".card").length,
      rows: document.querySelectorAll("section.row").length,
      pageOf: document.querySelector("nav.pager .page-of").textContent,
      nodes: document.getElementsByTagName("*").length,
    }));
    check(!load.unsupported, `no longtask observer: ${load.unsupported}`);
    log(`load: ${expectBuilds} builds shown in ${loadMs} ms (${load.pageOf}, ${load.rows} rows, ${load.cards} cards, ${load.nodes} elements); ${figures(load.longtasks, null)}`);
    // One full relayout (group, filter, sort every build; reconcile the page),
    // what a new build or a filter keystroke costs.
    const relayout = await page.evaluate(() => {
      const times = [];
      for (let i = 0; i < 5; i++) {
        const t = performance.now();
        layout();
        times.push(performance.now() - t);
      }
      return times.sort((a, b) => a - b);
    });
    log(`relayout of ${expectBuilds} builds: median ${ms(relayout[2])}, max ${ms(relayout[4])}`);
    check(load.rows === 20, `rows on the first page: ${load.rows}`);
    check(load.cards <= 20 * 5, `more cards than a page shows: ${load.cards}`);
    const pages = Number(/page 1 of (\d+)/.exec(load.pageOf)?.[1]);
    check(pages > 1, `pager: ${load.pageOf}`);

    // Pages forwards and back, in the URL.
    const firstRow = await page.getAttribute("section.row", "data-row");
    await page.click("nav.pager >> nth=0 >> a[rel=next]");
    await page.waitForFunction((n) => document.querySelector("nav.pager .page-of")?.textContent === `page 2 of ${n}`, pages, {
      timeout: PAGE_READY,
    });
    check(new URL(page.url()).searchParams.get("page") === "2", `URL of page 2: ${page.url()}`);
    check((await page.getAttribute("section.row", "data-row")) !== firstRow, "page 2 shows page 1's first row");
    await page.click("nav.pager >> nth=0 >> a[rel=prev]");
    await page.waitForFunction((k) => document.querySelector("section.row")?.dataset.row === k, firstRow, {
      timeout: PAGE_READY,
    });
    check(!new URL(page.url()).searchParams.has("page"), `URL of page 1: ${page.url()}`);
    log(`pager: ${pages} pages, forwards and back`);

    // No absent value is printed as text.
    const boardText = await page.evaluate(() => document.getElementById("content").textContent);
    check(!/null|undefined/.test(boardText), `stray null/undefined on the board:\n${boardText}`);

    // 2. The burst: every stopped build on the page, then the newest other
    // stopped builds (off the page: their changes must cost no DOM work).
    const onPage = await page.evaluate(() =>
      [...document.querySelectorAll(".card.status-stopped[data-name]")].map((c) => c.dataset.name),
    );
    const others = (await api("/api/v1/builds?status=stopped"))
      .sort((a, b) => (a.created < b.created ? 1 : a.created > b.created ? -1 : 0))
      .map((b) => b.name)
      .filter((n) => !onPage.includes(n));
    const stopped = [...onPage, ...others].slice(0, BURST);
    check(stopped.length === BURST, `only ${stopped.length} stopped builds`);
    const before = await page.evaluate((names) => {
      const burst = new Set(names);
      window.__burst = { mutatedOthers: new Set(), mutatedBurst: new Set() };
      for (const c of document.querySelectorAll(".card[data-name]")) c.__before = true;
      window.__burstObserver = new MutationObserver((records) => {
        for (const r of records) {
          const node = r.target.nodeType === 1 ? r.target : r.target.parentElement;
          // The clock refresh of relative times is not a build change.
          if (node?.closest("[data-time]")) continue;
          const card = node?.closest(".card[data-name]");
          if (!card) continue;
          (burst.has(card.dataset.name) ? window.__burst.mutatedBurst : window.__burst.mutatedOthers).add(card.dataset.name);
        }
      });
      window.__burstObserver.observe(document.getElementById("content"), {
        subtree: true,
        childList: true,
        characterData: true,
        attributes: true,
      });
      window.__perf.longtasks = [];
      window.__perf.frames = [];
      window.__perf.recording = true;
      window.__burstStart = performance.now();
      return {
        cards: document.querySelectorAll(".card[data-name]").length,
        burstOnPage: names.filter((n) => document.querySelector(`.card[data-name="${n}"]`)).length,
      };
    }, stopped);
    const tb = Date.now();
    const answers = await Promise.all(
      stopped.map((name) => fetch(`${base}/api/v1/builds/${name}/start`, { method: "POST" }).then((r) => r.status)),
    );
    check(answers.every((s) => s === 202 || s === 200), `start answers: ${answers}`);
    await page.waitForFunction(
      (names) => names.every((n) => builds.get(n)?.status === "started"),
      stopped,
      { timeout: BURST_DONE, polling: 100 },
    );
    // Let the last batch paint.
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
    const burstMs = Date.now() - tb;
    const burst = await page.evaluate((names) => {
      window.__perf.recording = false;
      window.__burstObserver.disconnect();
      const cards = [...document.querySelectorAll(".card[data-name]")];
      const set = new Set(names);
      return {
        longtasks: window.__perf.longtasks.filter((t) => t.start >= window.__burstStart),
        frames: window.__perf.frames,
        mutatedOthers: [...window.__burst.mutatedOthers],
        mutatedBurst: window.__burst.mutatedBurst.size,
        replaced: cards.filter((c) => !c.__before).map((c) => c.dataset.name),
        shownNotStarted: cards
          .filter((c) => set.has(c.dataset.name))
          .filter((c) => c.querySelector(".status").textContent !== "started")
          .map((c) => c.dataset.name),
        shown: cards.filter((c) => set.has(c.dataset.name)).length,
      };
    }, stopped);
    log(
      `burst: ${BURST} starts (${before.burstOnPage} of them on the page, ${before.cards} cards shown) applied in ${burstMs} ms; ` +
        figures(burst.longtasks, burst.frames),
    );
    check(burst.shownNotStarted.length === 0, `cards not showing started: ${burst.shownNotStarted}`);
    check(burst.shown === before.burstOnPage, `burst cards on the page: ${burst.shown}, before ${before.burstOnPage}`);
    check(burst.mutatedBurst === before.burstOnPage, `changed cards touched: ${burst.mutatedBurst} of ${before.burstOnPage}`);
    check(burst.mutatedOthers.length === 0, `unchanged cards were touched: ${burst.mutatedOthers}`);
    check(burst.replaced.length === 0, `cards were made anew: ${burst.replaced}`);
    check((await page.locator(".card button.pin").count()) === 0, "pin buttons on the board");
    log(`started: ${stopped.join(",")}`);
    await page.screenshot({ path: join(shots, "board-scale.png") });

    // The wire fields of newer servers (`superseded_by`, `pinned`,
    // `eta_seconds`) render on the cards: fed to the page's own update path
    // (this server does not send them yet).
    const [older, newer] = onPage;
    await page.evaluate(
      ([a, b]) => {
        upsert({ ...builds.get(a), superseded_by: b, pinned: true });
        upsert({ ...builds.get(b), status: "initializing", eta_seconds: 240 });
        render();
      },
      [older, newer],
    );
    await page.waitForSelector(`.card[data-name="${newer}"] .note .eta:has-text("ready in ~4 min")`, { timeout: PAGE_READY });
    const olderCard = `.card[data-name="${older}"]`;
    await page.waitForSelector(`${olderCard} .note .superseded a[href="/builds/${newer}"]`, { timeout: PAGE_READY });
    check(await page.isVisible(`${olderCard} .badge.pinned`), "no pinned badge");
    check(!(await page.isVisible(`.card[data-name="${newer}"] .badge.pinned`)), "pinned badge on an unpinned build");
    log("cards render superseded by, pinned and the estimate");

    // 3. The big repository: "show more" grows its largest row.
    await page.goto(`${base}/builds?repo=${encodeURIComponent(bigRepo)}`);
    await page.waitForFunction((n) => builds.size === n && document.querySelector(".card[data-name]"), bigRepoBuilds, {
      timeout: PAGE_READY,
    });
    const row = await page.evaluate(() => {
      let best = null;
      for (const s of document.querySelectorAll("section.row")) {
        const n = parseInt(s.querySelector(".count").textContent, 10);
        if (!best || n > best.n) best = { key: s.dataset.row, n, cards: s.querySelectorAll(".card").length };
      }
      return best;
    });
    check(row && row.n > 25 && row.cards === 5, `largest row: ${JSON.stringify(row)}`);
    await page.click(`section.row[data-row="${row.key}"] button.more`);
    await page.waitForFunction((k) => document.querySelectorAll(`section.row[data-row="${k}"] .card`).length === 25, row.key, {
      timeout: PAGE_READY,
    });
    log(`big repository: row ${row.key} of ${row.n} builds shows 5, then 25 cards`);

    // 4. The repositories page.
    await page.goto(`${base}/`);
    await page.waitForFunction((n) => document.querySelectorAll("table.repos tbody tr").length === n, expectRepos, {
      timeout: PAGE_READY,
    });
    const big = await page.evaluate((r) => {
      const tr = document.querySelector(`table.repos tr[data-repo="${r}"]`);
      return tr ? [...tr.querySelectorAll("td.num")].map((td) => Number(td.textContent)) : null;
    }, bigRepo);
    check(big && big[0] === bigRepoBuilds, `the big repository's row: ${big}`);
    check(big.slice(1).reduce((a, b) => a + b, 0) === bigRepoBuilds, `status counts do not add up: ${big}`);
    const summary = await api("/api/v1/repos/summary");
    check(summary.reduce((a, r) => a + r.builds, 0) === expectBuilds, "summary does not count every build");
    await page.screenshot({ path: join(shots, "repos-scale.png") });
    log(`repositories page: ${expectRepos} rows, ${bigRepo}: ${big}`);

    // 5. A build page: an initializing build, whose init log exists.
    let name = null;
    const deadline = Date.now() + PAGE_READY;
    while (!name && Date.now() < deadline) {
      for (const b of await api("/api/v1/builds?status=initializing")) {
        const r = await fetch(`${base}/api/v1/builds/${b.name}/init-log?tail_bytes=100`, { headers: { Accept: "text/plain" } });
        await r.text();
        if (r.ok) {
          name = b.name;
          break;
        }
      }
      if (!name) await new Promise((r) => setTimeout(r, 200));
    }
    check(name, "no initializing build with an init log");
    await page.goto(`${base}/builds/${name}`);
    await page.waitForSelector(`.card[data-name="${name}"].status-initializing`, { timeout: PAGE_READY });
    await page.waitForSelector("ol.timeline li", { timeout: PAGE_READY });
    await page.waitForFunction((n) => document.querySelector("pre.log-tail:not([hidden])")?.textContent.includes(`initializing ${n}`), name, {
      timeout: PAGE_READY,
    });
    const text = await page.evaluate(() => document.getElementById("content").textContent);
    check(!/null|undefined/.test(text), `stray null/undefined on the build page:\n${text}`);
    await page.screenshot({ path: join(shots, "build-scale.png"), fullPage: true });
    log(`build page: ${name} with timeline and init log`);

    // 6. The timeline and estimate as a server reporting them sends them
    // (wire fields `timeline`, `eta_seconds` of the single-build answer;
    // this server does not send them yet, so the answer is amended here).
    const amend = (target, extra) =>
      page.route(
        (url) => url.pathname === `/api/v1/builds/${target}`,
        async (route) => {
          const resp = await route.fetch();
          const json = await resp.json();
          await route.fulfill({ response: resp, json: { ...json, ...extra(json) } });
        },
      );
    const plus = (iso, s) => new Date(Date.parse(iso) + s * 1000).toISOString().replace(/\.\d+Z$/, "Z");
    await amend(name, (b) => ({ eta_seconds: 240, timeline: { created: b.created, init_started: plus(b.created, 90) } }));
    await page.goto(`${base}/builds/${name}`);
    await page.waitForSelector("ol.timeline li.eta", { timeout: PAGE_READY });
    const initializing = await page.evaluate(() => [...document.querySelectorAll("ol.timeline li")].map((li) => li.textContent));
    check(initializing.some((t) => t.includes("initialization started (waited 1 min 30 s)")), `timeline: ${initializing}`);
    check(initializing.some((t) => t.startsWith("initializing for ")), `timeline: ${initializing}`);
    check(initializing.includes("ready in ~4 min"), `timeline: ${initializing}`);
    const done = (await api("/api/v1/builds?status=stopped"))[0].name;
    await amend(done, (b) => ({
      timeline: {
        created: b.created,
        init_started: plus(b.created, 30),
        init_finished: plus(b.created, 360),
        started: plus(b.created, 1000),
        stopped: plus(b.created, 8200),
      },
    }));
    allowLogless = done;
    await page.goto(`${base}/builds/${done}`);
    await page.waitForSelector("ol.timeline li:nth-child(5)", { timeout: PAGE_READY });
    await page.waitForSelector(".log-box p:has-text('No initialization log (yet)')", { timeout: PAGE_READY });
    const finished = await page.evaluate(() => [...document.querySelectorAll("ol.timeline li")].map((li) => li.textContent));
    check(finished.some((t) => t.includes("initialization finished (took 5 min 30 s)")), `timeline: ${finished}`);
    check(finished.some((t) => t.includes("stopped (ran 2 h)")), `timeline: ${finished}`);
    // Pinning: the server asks for the admin's credentials (the browser
    // gives them), the badge shows and the button offers to unpin.
    check((await page.locator(".card button.pin").count()) === 1, "no pin button on the build page");
    await page.click(".card button.pin");
    await page.waitForSelector(".card .badge.pinned:not([hidden])", { timeout: PAGE_READY });
    await page.waitForSelector(".card button.pin:has-text('unpin'):enabled", { timeout: PAGE_READY });
    check((await api(`/api/v1/builds/${done}`)).pinned === true, "the API does not say pinned");
    await page.screenshot({ path: join(shots, "build-timeline-scale.png"), fullPage: true });
    log(`build page with a reported timeline: ${finished.join(" | ")}`);

    check(pageErrors.length === 0, pageErrors.join("\n"));
  } catch (e) {
    if (page) {
      const failure = join(shots, "scale-failure.png");
      await page.screenshot({ path: failure, fullPage: false }).catch(() => {});
      console.error(`[scale] page at failure: ${failure}`);
    }
    if (pageErrors.length) console.error(pageErrors.join("\n"));
    throw e;
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

run("scale", WHOLE_TEST, main);
