// The dashboard in a real browser (Debian's chromium, driven by
// playwright-core) against a real coordinator and three real agents on
// loopback: log in with a token, watch the federation update live, open
// every page, change a setting and see it persisted and audited. A
// screenshot of each page is saved in $ARTIFACTS (default
// target/browser-artifacts).
//
// Run: node --test dashboard.test.mjs   (after `cargo build -p tensorguard`)
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const here = path.dirname(new URL(import.meta.url).pathname);
const root = path.resolve(here, "../..");
const bin = process.env.TENSORGUARD_BIN || path.join(root, "target/debug/tensorguard");
const artifacts = process.env.ARTIFACTS || path.join(root, "target/browser-artifacts");
const chromePath = process.env.CHROMIUM || "/usr/bin/chromium";
fs.mkdirSync(artifacts, { recursive: true });

const work = fs.mkdtempSync(path.join(os.tmpdir(), "tg-browser-"));
const env = { ...process.env, TENSORGUARD_KEY_PASSPHRASE: "browser-test-passphrase", NO_COLOR: "1" };
const children = [];

function tg(dataDir, ...args) {
  return execFileSync(bin, ["--data-dir", dataDir, ...args], { env, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

function start(name, args) {
  const out = fs.openSync(path.join(work, `${name}.log`), "a");
  const child = spawn(bin, args, { env, stdio: ["ignore", out, out] });
  children.push(child);
  return child;
}

function freePort(base) {
  return base + Math.floor(Math.random() * 2000);
}

async function until(what, fn, timeoutMs = 120000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

test("the dashboard shows a live federation and changes settings with an audit trail", { timeout: 600000 }, async (t) => {
  assert.ok(fs.existsSync(bin), `build the binary first: ${bin}`);
  assert.ok(fs.existsSync(chromePath), `chromium not found at ${chromePath} (apt-get install chromium)`);
  const coord = path.join(work, "coordinator");
  const p2p = freePort(21000), http = freePort(24000);
  const admin = JSON.parse(tg(coord, "api", "token", "create", "--role", "admin", "--label", "browser", "--json")).token;
  const enroll = [0, 1, 2].map(() => JSON.parse(tg(coord, "enroll", "create", "--json")).token);
  const job = path.join(work, "job.toml");
  fs.writeFileSync(job, `[job]
dataset = "digits"
partition = "iid"
clients = 3
rounds = 10
min_clients = 2
seed = 42
hidden = 32
local_epochs = 1

[privacy]
mode = "local-sgd"
target_epsilon = 6.0
noise_multiplier = 1.0
sampling_rate = 0.05
steps_per_round = 10

[network]
listen = ["/ip4/127.0.0.1/tcp/${p2p}"]
mdns = false

[deadlines]
join_secs = 300
train_secs = 60
stage_secs = 20

[admission]
enrollment = true
`);
  start("coordinator", ["--data-dir", coord, "coordinator", "start", "--job", job, "--serve", "--api", `127.0.0.1:${http}`]);
  const addrFile = path.join(coord, "coordinator.addrs");
  const addr = await until("the coordinator's address", () => fs.existsSync(addrFile) && fs.readFileSync(addrFile, "utf8").split("\n")[0].trim());
  const base = `http://127.0.0.1:${http}`;
  await until("the API", async () => { try { return (await fetch(`${base}/api/v1/openapi.json`)).ok; } catch { return false; } });

  const browser = await chromium.launch({
    executablePath: chromePath,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  t.after(async () => {
    await browser.close();
    for (const c of children) c.kill("SIGKILL");
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  // On failure: a screenshot and what the page and the API said.
  t.after(async () => {
    if (t.passed === false || process.exitCode) {
      await page.screenshot({ path: path.join(artifacts, "99-failure.png"), fullPage: true }).catch(() => {});
    }
  });
  const consoleErrors = [];
  page.on("pageerror", (e) => consoleErrors.push(e.message));
  const shot = (name) => page.screenshot({ path: path.join(artifacts, `${name}.png`), fullPage: true });

  // A wrong token is refused with a visible error.
  await page.goto(base);
  await page.fill("#token", "tgapi_0000000000000000_" + "0".repeat(64));
  await page.click("#login-form button");
  await page.waitForSelector("#error:not([hidden])");
  assert.match(await page.textContent("#error"), /401/);
  await shot("00-login-refused");

  // Log in; the job waits for its agents.
  await page.fill("#token", admin);
  await page.click("#login-form button");
  await page.waitForSelector("#nav:not([hidden])");
  await page.waitForSelector("#live.on");
  await shot("01-overview-waiting");

  // Start the agents; the page must update on its own (no reload).
  enroll.forEach((tok, i) => start(`agent-${i}`, ["--data-dir", path.join(work, `agent-${i}`), "agent", "start", "--coordinator", addr,
    "--once", "--allow-plaintext", "--partition", "iid", "--seed", "42", "--shard", `${i}/3`, "--name", `robot-${i}`, "--enroll", tok]));
  await page.waitForFunction(() => document.querySelectorAll("#timeline .round.committed").length >= 2, null, { timeout: 180000 });
  await page.waitForFunction(() => document.querySelectorAll("#fleet tbody tr").length === 3, null, { timeout: 60000 });
  const fleet = await page.$$eval("#fleet tbody tr", (rows) => rows.map((r) => r.textContent));
  assert.ok(fleet.every((r) => /robot-\d/.test(r)), fleet.join("\n"));
  // A DP job keeps no reputation: the column is there, empty.
  assert.match(await page.textContent("#fleet thead"), /Reputation/);
  assert.match(await page.textContent("#job-summary"), /running|completed/);
  await shot("02-overview-live");

  const open = async (name) => {
    await page.click(`nav a[data-page=${name}]`);
    await page.waitForSelector(`#page-${name}:not([hidden])`);
  };
  await open("training");
  await page.waitForSelector("#chart-accuracy svg path");
  await page.waitForSelector("#chart-loss svg path");
  await shot("03-training");

  await open("compression");
  await page.waitForSelector("#chart-ratio svg rect");
  await shot("04-compression");

  await open("privacy");
  await page.waitForSelector("#gauge svg");
  assert.match(await page.textContent("#privacy-summary"), /Spent ε = [\d.]+ of the target 6/);
  await page.waitForSelector("#ledger tbody tr");
  await shot("05-privacy");

  await open("experts");
  await page.waitForFunction(() => document.getElementById("experts-note").textContent.length > 0);
  assert.match(await page.textContent("#experts-note"), /no experts|expert/);
  // Success per task over versions: this job's robots report no per-task counts.
  assert.match(await page.textContent("#task-success-note"), /per-task/);
  await shot("06-experts");

  // The model registry: versions with the head marked, and an audited
  // rollback from the page (the admin token may operate).
  await open("models");
  await page.waitForFunction(() => document.querySelectorAll("#versions tbody tr").length >= 2);
  assert.match(await page.textContent("#versions tbody tr:first-child"), /head/);
  await shot("06b-models");
  await page.fill("#rollback-reason", "browser test: back to an earlier version");
  await page.click("#rollback-form button[type=submit]");
  await page.waitForFunction(() => document.getElementById("rollback-status").textContent.startsWith("Rolled back"), null, { timeout: 30000 });
  await page.waitForSelector("#rollbacks tbody tr");
  assert.match(await page.textContent("#rollbacks tbody"), /browser test: back to an earlier version/);
  await shot("06c-models-rolled-back");

  await open("audit");
  await page.waitForSelector("#audit tbody tr");
  await page.fill("#audit-kind", "model.rolled_back");
  await page.click("#audit-form button[type=submit]");
  await page.waitForFunction(() => /browser test: back to an earlier version/.test(document.querySelector("#audit tbody").textContent));
  await page.fill("#audit-kind", "");
  await page.fill("#audit-q", "admission.accepted");
  await page.click("#audit-form button[type=submit]");
  await page.waitForFunction(() => /^[3-9]\d* matching|^\d{2,} matching/.test(document.getElementById("audit-count").textContent));
  const download = page.waitForEvent("download");
  await page.click("#audit-export");
  const file = await download;
  const saved = path.join(artifacts, "audit-export.jsonl");
  await file.saveAs(saved);
  assert.ok(fs.readFileSync(saved, "utf8").split("\n").filter(Boolean).length >= 4);
  await shot("07-audit");

  // Change a setting; it survives a reload and is in the audit log.
  await open("settings");
  await page.fill("#defaults-form input[name=rounds]", "7");
  await page.fill("#defaults-form input[name=target_epsilon]", "2.5");
  await page.click("#defaults-form button[type=submit]");
  await page.waitForFunction(() => document.getElementById("defaults-status").textContent.startsWith("Saved"));
  await page.selectOption("#kms-provider", "aws");
  await page.fill("#kms-form input[name=region]", "eu-west-1");
  await page.fill("#kms-form input[name=key_id]", "alias/tensorguard");
  await page.click("#kms-test");
  await page.waitForFunction(() => /^(reachable|unreachable|ok|misconfigured):/.test(document.getElementById("kms-status").textContent), null, { timeout: 30000 });
  const kmsResult = await page.textContent("#kms-status");
  await shot("08-settings-provider-test");
  await page.reload();
  await page.waitForSelector("#nav:not([hidden])");
  await open("settings");
  await page.waitForFunction(() => document.querySelector("#defaults-form input[name=rounds]").value === "7", null, { timeout: 30000 })
    .catch(async (e) => {
      await shot("99-failure");
      const api = await (await fetch(`${base}/api/v1/settings`, { headers: { Authorization: `Bearer ${admin}` } })).text();
      throw new Error(`${e.message}\npage: ${await page.textContent("#page-settings")}\nerror banner: ${await page.textContent("#error")}\nAPI: ${api}`);
    });
  assert.equal(await page.inputValue("#defaults-form input[name=target_epsilon]"), "2.5");
  assert.match(await page.textContent("#defaults-status"), /Last changed .* by token/);
  await shot("09-settings-persisted");
  await open("audit");
  await page.uncheck("#audit-job");
  await page.fill("#audit-q", "");
  await page.fill("#audit-kind", "config.changed");
  await page.click("#audit-form button[type=submit]");
  await page.waitForFunction(() => document.querySelectorAll("#audit tbody tr").length >= 1 && /target_epsilon/.test(document.querySelector("#audit tbody").textContent));
  await shot("10-audit-setting-change");

  assert.deepEqual(consoleErrors, [], "no script errors on any page");
  fs.writeFileSync(path.join(artifacts, "summary.json"), JSON.stringify({ fleet, kmsResult }, null, 2));
});
