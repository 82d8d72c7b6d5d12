// Headless Chromium test of wake on request, driven by tests/it/wake_e2e.rs
// (the real runboat-server on kubesim, behind a stand-in ingress controller
// that resolves hosts through the cluster's Ingress objects).
//
// Chromium uses the stand-in as its HTTP proxy, opens a sleeping build's URL
// (path, query and fragment), sees runboat's waiting page (screenshot), and
// must end, by the page's own reloads, on the same URL showing the build's
// own Service.
//
// Environment (all required):
//   RUNBOAT_PROXY          the stand-in ingress, e.g. http://127.0.0.1:41234
//   RUNBOAT_BUILD_URL      the build URL to open
//   RUNBOAT_BUILD_SERVICE  the build's Service the stand-in names when reached
//   RUNBOAT_SCREENSHOT     where to write the PNG of the waiting page
//   RUNBOAT_CHROMIUM       the Chromium executable

import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";

import { chromium } from "playwright-core";

import { env as sharedEnv, run } from "./common.mjs";

const env = (name) => sharedEnv("wake.mjs", name);

const proxy = env("RUNBOAT_PROXY");
const url = env("RUNBOAT_BUILD_URL");
const service = env("RUNBOAT_BUILD_SERVICE");
const screenshot = env("RUNBOAT_SCREENSHOT");
const executablePath = env("RUNBOAT_CHROMIUM");

const READY = 60_000;
const WHOLE_TEST = 120_000;

function log(msg) {
  console.log(`[wake] ${msg}`);
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
    viewport: { width: 1024, height: 700 },
    proxy: { server: proxy },
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
  let page;
  try {
    page = context.pages()[0] ?? (await context.newPage());
    page.on("framenavigated", (f) => {
      if (f === page.mainFrame()) log(`navigated: ${f.url()}`);
    });
    await page.goto(url, { waitUntil: "domcontentloaded" });
    const first = await page.textContent("body");
    check(first.includes("Waking the build up"), `not the waiting page: ${first}`);
    check(/Starting\.|Ready/.test(first), `the build is not starting: ${first}`);
    await page.screenshot({ path: screenshot, fullPage: true });
    log(`waiting page: ${screenshot}`);
    // The page reloads itself until the Ingress points at the build.
    await page.waitForSelector("#reached", { timeout: READY });
    const reached = await page.textContent("#reached");
    check(reached === `reached ${service}`, `reached: ${reached}`);
    check(page.url() === url, `ended on ${page.url()}, not ${url}`);
    log(`ended on ${page.url()}`);
  } catch (e) {
    if (page) {
      const failure = screenshot.replace(/\.png$/, "") + "-failure.png";
      await page.screenshot({ path: failure, fullPage: true }).catch(() => {});
      console.error(`[wake] page at failure: ${failure}`);
      console.error(`[wake] page content:\n${await page.content().catch(() => "")}`);
    }
    throw e;
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

run("wake", WHOLE_TEST, main);
