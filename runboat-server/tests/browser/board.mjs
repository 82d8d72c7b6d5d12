// Headless Chromium test of the runboat-server web UI, driven by
// tests/it/browser.rs (which starts the server on a real socket over the
// real controller and the simulated cluster, then runs this script).
//
// It loads the board of a repository, delivers a signed push webhook, sees
// the new build change status live (server-sent events, no reload), clicks
// "start", sees the build reach "started", checks the filter box, saves a
// screenshot, and opens the build's own page.
//
// Every wait is a condition with a deadline; a failure exits non-zero with
// the reason, and a screenshot of the page at that moment is saved next to
// the requested one (…-failure.png).
//
// Environment (all required):
//   RUNBOAT_URL             base URL of the server, e.g. http://127.0.0.1:41234
//   RUNBOAT_WEBHOOK_SECRET  the server's GitHub webhook secret
//   RUNBOAT_SCREENSHOT      where to write the PNG
//   RUNBOAT_CHROMIUM        the Chromium executable (Debian: /usr/bin/chromium)

import { createHmac } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";

import { chromium } from "playwright-core";

import { env as sharedEnv, run } from "./common.mjs";

const env = (name) => sharedEnv("board.mjs", name);

const base = env("RUNBOAT_URL");
const secret = env("RUNBOAT_WEBHOOK_SECRET");
const screenshot = env("RUNBOAT_SCREENSHOT");
const executablePath = env("RUNBOAT_CHROMIUM");

// Deadlines (the simulated cluster runs on the real clock with short jobs:
// the whole test takes seconds; these only bound a hang).
const PAGE_READY = 30_000;
const STATUS_CHANGE = 60_000;
const WHOLE_TEST = 150_000;

const repo = "oca/web";
const sha = "b0a7".padEnd(40, "0");

function log(msg) {
  console.log(`[browser] ${msg}`);
}

// Records, from the moment the document exists, every status each build card
// shows and every action feedback text: what a person watching the page
// would have seen, independent of when the test looks.
function recorder() {
  window.__seen = { statuses: {}, feedback: [], conn: [] };
  const scan = () => {
    const seen = window.__seen;
    for (const card of document.querySelectorAll(".card[data-name]")) {
      const name = card.dataset.name;
      const status = card.querySelector(".status")?.textContent ?? "";
      const list = (seen.statuses[name] ??= []);
      if (status && list[list.length - 1] !== status) list.push(status);
      const fb = card.querySelector(".feedback")?.textContent ?? "";
      if (fb && seen.feedback[seen.feedback.length - 1] !== fb) seen.feedback.push(fb);
    }
    const conn = document.getElementById("conn")?.textContent ?? "";
    if (conn && seen.conn[seen.conn.length - 1] !== conn) seen.conn.push(conn);
  };
  new MutationObserver(scan).observe(document, {
    subtree: true,
    childList: true,
    characterData: true,
    attributes: true,
  });
}

async function deliverPush() {
  const body = JSON.stringify({
    ref: "refs/heads/16.0",
    after: sha,
    repository: { full_name: "OCA/web" },
  });
  const signature = "sha256=" + createHmac("sha256", secret).update(body).digest("hex");
  const resp = await fetch(`${base}/webhooks/github`, {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      "X-GitHub-Event": "push",
      "X-Hub-Signature-256": signature,
    },
    body,
  });
  const text = await resp.text();
  if (resp.status !== 202) throw new Error(`webhook answered ${resp.status}: ${text}`);
  const detail = JSON.parse(text).detail ?? "";
  const name = detail.replace(/^deploying build /, "");
  if (!/^b[0-9a-f]{32}$/.test(name)) throw new Error(`unexpected webhook answer: ${text}`);
  return name;
}

function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

async function main() {
  const profile = mkdtempSync(join(tmpdir(), "runboat-chromium-"));
  mkdirSync(dirname(screenshot), { recursive: true });
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    viewport: { width: 1280, height: 720 },
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
  let page;
  try {
    page = context.pages()[0] ?? (await context.newPage());
    page.on("pageerror", (e) => pageErrors.push(`page error: ${e.message}`));
    // Any script error or failed request of the page fails the test, except
    // the browser's own favicon probe (the page declares no icon).
    const probe = (url) => new URL(url, base).pathname === "/favicon.ico";
    page.on("console", (m) => {
      const url = m.location().url;
      if (m.type() === "error" && !(url && probe(url))) {
        pageErrors.push(`console error: ${m.text()} (${url})`);
      }
    });
    page.on("response", (r) => {
      if (r.status() >= 400 && !probe(r.url())) pageErrors.push(`HTTP ${r.status()} for ${r.url()}`);
    });
    await page.addInitScript(recorder);

    // 1. The board of the repository, empty and connected to the live stream.
    await page.goto(`${base}/builds?repo=${encodeURIComponent(repo)}`);
    await page.waitForSelector("#conn.ok", { timeout: PAGE_READY });
    check((await page.textContent("#conn")) === "live", "connection pill does not say live");
    await page.waitForSelector("#content p.empty", { timeout: PAGE_READY });
    check((await page.textContent("#content p.empty")) === "No builds.", "board is not empty");
    // The picker names the repository shown, even before it has builds.
    await page.waitForFunction(
      (r) => document.getElementById("repo-picker").value === r,
      repo,
      { timeout: PAGE_READY },
    );
    // Proof that no reload happens: this survives only in the same document.
    await page.evaluate(() => (window.__sameDocument = true));
    log("board loaded, stream live, no builds");

    // 2. A push arrives: the build appears and changes status live.
    const name = await deliverPush();
    log(`webhook accepted: build ${name}`);
    const card = `.card[data-name="${name}"]`;
    await page.waitForSelector(`${card}.status-initializing`, { timeout: STATUS_CHANGE });
    log("card shows initializing");
    await page.waitForSelector(`${card}.status-stopped`, { timeout: STATUS_CHANGE });
    log("card shows stopped");
    const rowTitle = await page.textContent(".row .row-head .title");
    check(rowTitle.trim() === "16.0", `row title is ${JSON.stringify(rowTitle)}`);
    check(
      (await page.getAttribute(`${card} a[title="${sha}"]`, "href"))?.endsWith(sha),
      "commit link missing",
    );

    // 3. Start it from the page.
    const start = page.locator(`${card} button`, { hasText: /^start$/ });
    await start.click({ timeout: STATUS_CHANGE });
    log("clicked start");
    await page.waitForSelector(`${card}.status-started`, { timeout: STATUS_CHANGE });
    log("card shows started");
    const build = await (await fetch(`${base}/api/v1/builds/${name}`)).json();
    check(build.status === "started", `API says ${build.status}`);
    const live = await page.getAttribute(`${card} .links a:has-text("live")`, "href");
    check(live === build.deploy_link, `live link is ${live}, API says ${build.deploy_link}`);
    const mail = await page.getAttribute(`${card} .links a:has-text("mail")`, "href");
    check(mail === build.deploy_link_mailhog, `mail link is ${mail}`);
    check(
      await page.locator(`${card} button`, { hasText: /^start$/ }).isDisabled(),
      "start still enabled once started",
    );
    check(
      await page.locator(`${card} button`, { hasText: /^stop$/ }).isEnabled(),
      "stop not enabled once started",
    );

    // 4. The filter box narrows the board as one types, and keeps it in the URL.
    await page.fill("#filter", "no-such-build");
    await page.waitForSelector("#content p.empty:has-text('No build matches the filter.')", {
      timeout: PAGE_READY,
    });
    check(new URL(page.url()).searchParams.get("q") === "no-such-build", "filter not in the URL");
    await page.fill("#filter", "started 16.0");
    await page.waitForSelector(`${card}.status-started`, { timeout: PAGE_READY });
    await page.fill("#filter", "");
    await page.waitForSelector(`${card}.status-started`, { timeout: PAGE_READY });

    // 5. What was seen, in order, without any reload.
    const seen = await page.evaluate(() => ({ ...window.__seen, same: window.__sameDocument }));
    log(`seen: ${JSON.stringify(seen)}`);
    check(seen.same === true, "the page was reloaded");
    const statuses = seen.statuses[name] ?? [];
    const at = (s) => statuses.indexOf(s);
    check(
      at("initializing") >= 0 && at("initializing") < at("stopped") && at("stopped") < at("started"),
      `statuses not seen in order initializing → stopped → started: ${statuses}`,
    );
    check(seen.feedback.includes("start…"), `no immediate feedback on start: ${seen.feedback}`);
    check(pageErrors.length === 0, pageErrors.join("\n"));

    await page.screenshot({ path: screenshot, fullPage: true });
    log(`screenshot: ${screenshot}`);

    // 6. The build's own page, from the card's name link.
    await page.click(`${card} p.name a`);
    await page.waitForSelector(`body[data-page="build"] ${card}.status-started`, {
      timeout: PAGE_READY,
    });
    const details = await page.textContent("dl.details");
    check(details.includes(sha) && details.includes(build.deploy_link), `details: ${details}`);
    check(pageErrors.length === 0, pageErrors.join("\n"));
    log("build page shows the started build");
  } catch (e) {
    if (page) {
      const failure = screenshot.replace(/\.png$/, "") + "-failure.png";
      await page.screenshot({ path: failure, fullPage: true }).catch(() => {});
      console.error(`[browser] page at failure: ${failure}`);
      const html = await page.content().catch(() => "");
      console.error(`[browser] page content:\n${html}`);
    }
    if (pageErrors.length) console.error(pageErrors.join("\n"));
    throw e;
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

run("browser", WHOLE_TEST, main);
