// TensorGuard dashboard: login, API access, live updates (SSE over fetch,
// so the token travels in a header, never in a URL), and the overview,
// audit and settings pages. Every number shown comes from the API; a
// failed request is shown as an error, never replaced by sample data.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem("tg-token"), job: null, pinned: false, jobs: [], rounds: [], agents: [], stage: null, models: [], page: "overview", live: null };

class ApiFailure extends Error {}

async function api(path, options) {
  options = options || {};
  const headers = Object.assign({ Authorization: `Bearer ${state.token}` }, options.headers || {});
  let res;
  try {
    res = await fetch(path, Object.assign({}, options, { headers }));
  } catch (e) {
    throw new ApiFailure(`${path}: the coordinator cannot be reached (${e.message})`);
  }
  if (!res.ok) {
    let message = res.statusText;
    try { message = (await res.json()).error.message; } catch (_) { /* not JSON */ }
    if (res.status === 401) logout(`Your token was refused: ${message}`);
    throw new ApiFailure(`${options.method || "GET"} ${path} → ${res.status}: ${message}`);
  }
  return options.raw ? res : res.json();
}

function showError(e) {
  const box = $("error");
  box.textContent = e ? `${e.message || e}` : "";
  box.hidden = !e;
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "–" : `${text}`;
  if (cls) td.className = cls;
  tr.append(td);
  return td;
}

function ago(ms) {
  if (!ms) return "–";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 60 ? `${s} s ago` : s < 3600 ? `${Math.round(s / 60)} min ago` : new Date(ms).toLocaleString();
}

// ---- session ----
async function login(token) {
  state.token = token;
  try {
    await api("/api/v1/jobs");
  } catch (e) {
    state.token = null;
    showError(e);
    return;
  }
  sessionStorage.setItem("tg-token", token);
  $("login").hidden = true;
  $("nav").hidden = false;
  $("session").hidden = false;
  showError(null);
  await refreshAll();
  connectLive();
  show(location.hash.slice(1) || "overview");
}

function logout(message) {
  sessionStorage.removeItem("tg-token");
  state.token = null;
  if (state.live) state.live.abort();
  $("login").hidden = false;
  $("nav").hidden = true;
  $("session").hidden = true;
  document.querySelectorAll(".page").forEach((p) => { p.hidden = true; });
  if (message) showError(message);
}

function show(page) {
  if (!$(`page-${page}`)) page = "overview";
  state.page = page;
  document.querySelectorAll(".page").forEach((p) => { p.hidden = p.id !== `page-${page}`; });
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === page));
  renderPage().catch(showError);
}

// ---- data ----
async function refreshJobs() {
  state.jobs = (await api("/api/v1/jobs")).jobs;
  const select = $("job-select");
  const keep = state.job;
  select.replaceChildren();
  for (const j of state.jobs) {
    const o = document.createElement("option");
    o.value = j.id;
    o.textContent = `${j.id.slice(0, 8)} · ${j.kind} · ${j.status}`;
    select.append(o);
  }
  const running = state.jobs.find((j) => j.status === "running");
  // Follow the running job unless the operator picked one.
  const kept = keep && state.jobs.some((j) => j.id === keep) && (state.pinned || !running);
  state.job = kept ? keep : (running || state.jobs[0] || {}).id || null;
  if (state.job !== keep) state.stage = null;
  if (state.job) select.value = state.job;
}

async function refreshJobData() {
  if (!state.job) { state.rounds = []; state.models = []; state.registry = null; return; }
  const [r, m] = await Promise.all([api(`/api/v1/jobs/${state.job}/rounds`), api(`/api/v1/jobs/${state.job}/models`)]);
  state.rounds = r.rounds;
  state.models = m.models;
  state.registry = m;
}

async function refreshAll() {
  try {
    await refreshJobs();
    await refreshJobData();
    state.agents = (await api("/api/v1/agents")).agents;
    showError(null);
  } catch (e) { showError(e); }
}

// ---- live updates ----
async function connectLive() {
  if (state.live) state.live.abort();
  const ctl = new AbortController();
  state.live = ctl;
  const badge = $("live");
  try {
    const res = await api("/api/v1/events", { raw: true, signal: ctl.signal, headers: { Accept: "text/event-stream" } });
    badge.textContent = "live";
    badge.className = "badge on";
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        let kind = "message", data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) kind = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trim();
        }
        if (data) await onEvent(kind, JSON.parse(data));
      }
    }
  } catch (e) {
    if (ctl.signal.aborted) return;
    showError(e);
  }
  badge.textContent = "offline";
  badge.className = "badge off";
  if (state.token && !ctl.signal.aborted) setTimeout(() => { refreshAll().then(connectLive); }, 3000);
}

async function onEvent(kind, data) {
  if (kind === "error") { showError(`Live updates: ${data.message}`); return; }
  if (kind === "agents") state.agents = data.agents;
  if (kind === "stage" && data.job === state.job) state.stage = data;
  if (kind === "job") await refreshJobs();
  if (kind === "round" || kind === "job") {
    if (!state.job || data.job === state.job || (data.id && data.id === state.job)) await refreshJobData();
  }
  // Pages with forms (settings) or a query the operator typed (audit) are
  // never redrawn under the operator's hands.
  if (kind !== "hello" && LIVE_PAGES.has(state.page)) await renderPage();
}

const LIVE_PAGES = new Set(["overview", "training", "compression", "privacy", "models", "experts"]);

// ---- pages ----
async function renderPage() {
  const job = state.jobs.find((j) => j.id === state.job);
  switch (state.page) {
    case "overview": return renderOverview(job);
    case "training": return renderTraining(state.rounds);
    case "compression": return renderCompression(state.rounds, state.models);
    case "privacy":
      if (!state.job) return renderPrivacy({ target_epsilon: null, ledger: [] });
      return renderPrivacy(await api(`/api/v1/jobs/${state.job}/privacy`));
    case "models": return renderModels(state.registry);
    case "experts": {
      renderExpertSteps(state.rounds, state.registry);
      renderTaskSuccess(state.rounds);
      const head = state.registry && state.registry.head;
      const model = (head && state.models.find((m) => m.sha256 === head.sha256)) || state.models[state.models.length - 1];
      if (!model) return renderExperts({ names: [], experts: [] }, null);
      const res = await api(`/api/v1/models/${model.sha256}`, { raw: true });
      return renderExperts(expertNorms(await res.arrayBuffer()), model);
    }
    case "audit": return renderAudit();
    case "settings": return renderSettings();
    default: return undefined;
  }
}

function renderOverview(job) {
  const summary = $("job-summary");
  summary.replaceChildren();
  if (!job) {
    summary.textContent = "No job has run on this coordinator yet.";
  } else {
    const dl = document.createElement("dl");
    dl.className = "kv";
    const add = (k, v, cls) => {
      const dt = document.createElement("dt"); dt.textContent = k;
      const dd = document.createElement("dd"); dd.textContent = v; if (cls) dd.className = cls;
      dl.append(dt, dd);
    };
    add("Job", job.id);
    add("Status", job.status, `status-${job.status}`);
    add("Rounds", `${job.rounds_committed} committed, ${job.rounds_failed} failed of ${job.spec.rounds ?? "?"}`);
    add("Last accuracy", fmtNum(job.last_accuracy));
    const strategy = job.spec.strategy && typeof job.spec.strategy === "object" ? job.spec.strategy.kind : job.spec.strategy;
    add("Strategy / model", `${strategy ?? "?"} · ${job.spec.model ?? "?"}`);
    if (job.reason) add("Reason", job.reason);
    summary.append(dl);
  }
  const tbody = document.querySelector("#fleet tbody");
  tbody.replaceChildren();
  const agents = state.agents.filter((a) => !state.job || a.job === state.job);
  for (const a of agents) {
    const tr = document.createElement("tr");
    const live = a.status !== "unknown";
    cell(tr, a.name ?? "–");
    cell(tr, `${a.peer_id.slice(0, 12)}…`).title = a.peer_id;
    cell(tr, live ? a.status : "not connected", `status-${a.status}`);
    cell(tr, live ? ago(a.last_seen_ms) : "–");
    cell(tr, a.last_latency_ms == null ? "–" : `${a.last_latency_ms} ms`);
    cell(tr, live ? fmtBytes(a.bytes_up) : "–");
    cell(tr, live ? fmtBytes(a.bytes_down) : "–");
    const label = a.attestation ? (a.attestation.label || a.attestation.status || JSON.stringify(a.attestation)) : "not required";
    cell(tr, label, `status-${label}`);
    const r = a.reputation;
    let rep = "–";
    if (r) {
      const flags = `${r.flagged} flagged of ${r.screened} screened`;
      rep = r.standing === "excluded" ? `excluded since round ${r.since_round} (${flags})`
        : r.standing === "downweighted" ? `down-weighted ×${fmtNum(r.weight)} (${flags})`
        : `good (${flags})`;
    }
    const rc = cell(tr, rep, r ? `reputation-${r.standing}` : "");
    if (r && r.last_score != null) rc.title = `last score ${fmtNum(r.last_score)}`;
    tbody.append(tr);
  }
  $("fleet-note").textContent = agents.length ? "" :
    "No agents are connected to this coordinator process (an in-process demo has no network agents; its clients appear in the rounds below).";
  const tl = $("timeline");
  tl.replaceChildren();
  const maxMs = Math.max(1, ...state.rounds.map((r) => r.duration_ms));
  for (const r of state.rounds) {
    const d = document.createElement("div");
    d.className = `round ${r.status}`;
    d.style.height = `${16 + Math.round((48 * r.duration_ms) / maxMs)}px`;
    d.textContent = r.round;
    d.title = `round ${r.round}: ${r.status} · ${r.participants}/${r.selected} agents · ${r.duration_ms} ms` +
      (r.accuracy !== null ? ` · accuracy ${fmtNum(r.accuracy)}` : "") + (r.reason ? ` · ${r.reason}` : "");
    tl.append(d);
  }
  if (job && job.status === "running") {
    const d = document.createElement("div");
    d.className = "round running";
    d.style.height = "16px";
    d.textContent = `${state.rounds.length + 1}`;
    d.title = "in progress";
    tl.append(d);
  }
  $("stage").textContent = state.stage && job && job.status === "running"
    ? `Round ${state.stage.round}: ${state.stage.stage}` : (state.rounds.length ? "" : "No rounds recorded yet.");
}

async function renderAudit(fromForm) {
  const params = new URLSearchParams({ limit: "200" });
  if ($("audit-q").value) params.set("q", $("audit-q").value);
  if ($("audit-kind").value) params.set("kind", $("audit-kind").value.trim());
  if ($("audit-job").checked && state.job) params.set("job", state.job);
  const res = await api(`/api/v1/audit?${params}`);
  $("audit-count").textContent = `${res.total} matching entr${res.total === 1 ? "y" : "ies"}${res.total > res.entries.length ? ` (newest ${res.entries.length} shown)` : ""}`;
  const tbody = document.querySelector("#audit tbody");
  tbody.replaceChildren();
  for (const e of res.entries) {
    const tr = document.createElement("tr");
    cell(tr, e.seq);
    cell(tr, new Date(e.time * 1000).toLocaleString());
    cell(tr, e.kind);
    cell(tr, e.job ? e.job.slice(0, 8) : "–");
    cell(tr, JSON.stringify(e.body), "details");
    tbody.append(tr);
  }
  if (fromForm) showError(null);
}

async function exportAudit() {
  const q = $("audit-job").checked && state.job ? `?job=${state.job}` : "";
  const res = await api(`/api/v1/audit/export${q}`, { raw: true });
  const url = URL.createObjectURL(await res.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = `tensorguard-audit${state.job && q ? `-${state.job.slice(0, 8)}` : ""}.jsonl`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

function provider() {
  const form = $("kms-form");
  const p = form.elements.provider.value;
  const body = { provider: p };
  form.querySelectorAll("label[data-for]").forEach((l) => {
    if (l.dataset.for.split(" ").includes(p)) {
      const input = l.querySelector("input");
      body[input.name] = input.value;
    }
  });
  return body;
}

function showProviderFields() {
  const p = $("kms-provider").value;
  document.querySelectorAll("#kms-form label[data-for]").forEach((l) => { l.hidden = !l.dataset.for.split(" ").includes(p); });
}

async function renderSettings() {
  const s = await api("/api/v1/settings");
  const form = $("defaults-form");
  for (const input of form.querySelectorAll("input")) {
    const v = s.job_defaults.value[input.name];
    input.value = v === undefined ? "" : v;
  }
  const by = (x) => (x.updated_at_ms ? `Last changed ${new Date(x.updated_at_ms).toLocaleString()} by token ${x.updated_by}.` : "Never changed.");
  $("defaults-status").textContent = by(s.job_defaults);
  const kms = $("kms-form");
  const p = s.key_provider.value;
  kms.elements.provider.value = p.provider;
  for (const input of kms.querySelectorAll("input")) input.value = p[input.name] === undefined ? "" : p[input.name];
  showProviderFields();
  $("kms-status").textContent = by(s.key_provider);
}

async function saveDefaults(ev) {
  ev.preventDefault();
  const body = {};
  for (const input of $("defaults-form").querySelectorAll("input")) {
    if (input.value !== "") body[input.name] = Number(input.value);
  }
  try {
    await api("/api/v1/settings/job_defaults", { method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    await renderSettings();
    $("defaults-status").textContent = `Saved and recorded in the audit log. ${$("defaults-status").textContent}`;
    showError(null);
  } catch (e) { showError(e); }
}

async function saveProvider(ev) {
  ev.preventDefault();
  try {
    await api("/api/v1/settings/key_provider", { method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify(provider()) });
    await renderSettings();
    $("kms-status").textContent = `Saved and recorded in the audit log. ${$("kms-status").textContent}`;
    showError(null);
  } catch (e) { showError(e); }
}

async function testProvider() {
  $("kms-status").textContent = "Testing…";
  try {
    const r = await api("/api/v1/settings/key_provider/test", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(provider()) });
    $("kms-status").textContent = `${r.status}: ${r.detail}`;
    showError(null);
  } catch (e) { $("kms-status").textContent = ""; showError(e); }
}

// ---- wiring ----
document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (ev) => { ev.preventDefault(); login($("token").value.trim()); });
  $("logout").addEventListener("click", () => logout());
  window.addEventListener("hashchange", () => show(location.hash.slice(1)));
  $("job-select").addEventListener("change", async (ev) => {
    state.job = ev.target.value;
    state.pinned = true;
    state.stage = null;
    try { await refreshJobData(); await renderPage(); showError(null); } catch (e) { showError(e); }
  });
  $("rollback-form").addEventListener("submit", rollback);
  $("audit-form").addEventListener("submit", (ev) => { ev.preventDefault(); renderAudit(true).catch(showError); });
  $("audit-export").addEventListener("click", () => exportAudit().catch(showError));
  $("defaults-form").addEventListener("submit", saveDefaults);
  $("kms-form").addEventListener("submit", saveProvider);
  $("kms-provider").addEventListener("change", showProviderFields);
  $("kms-test").addEventListener("click", testProvider);
  if (state.token) login(state.token);
});
