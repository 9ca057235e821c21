// TensorGuard dashboard: the model registry (versions, head, audited
// rollback) and the experts of a mixture-of-experts job. Every number comes
// from the API: /jobs/{id}/models and the rounds' expert steps.
"use strict";

const short = (sha) => (sha ? sha.slice(0, 12) : "(initial)");

function renderModels(registry) {
  const tbody = document.querySelector("#versions tbody");
  tbody.replaceChildren();
  const versions = (registry && registry.versions) || [];
  const select = $("rollback-version");
  select.replaceChildren();
  for (const v of [...versions].reverse()) {
    const tr = document.createElement("tr");
    cell(tr, v.head ? "★ head" : "", v.head ? "status-committed" : "");
    cell(tr, short(v.sha256)).title = v.sha256;
    cell(tr, v.round);
    cell(tr, short(v.parent_sha256)).title = v.parent_sha256 || "the job's initial model (not stored)";
    cell(tr, fmtBytes(v.bytes));
    cell(tr, v.accuracy === null ? null : fmtNum(v.accuracy));
    cell(tr, v.epsilon === null ? null : fmtNum(v.epsilon));
    cell(tr, v.gate ? `${v.gate.candidate.successes}/${v.gate.candidate.episodes}` : null);
    cell(tr, new Date(v.created_at_ms).toLocaleString());
    tbody.append(tr);
    if (!v.head) {
      const o = document.createElement("option");
      o.value = v.sha256;
      o.textContent = `${short(v.sha256)} · round ${v.round}`;
      select.append(o);
    }
  }
  $("versions-note").textContent = versions.length
    ? `${versions.length} versions. The head is where the job's next round starts.`
    : "No committed model yet: the job's next round starts from its initial model.";
  $("rollback-form").hidden = select.options.length === 0;
  const rb = document.querySelector("#rollbacks tbody");
  rb.replaceChildren();
  for (const r of [...((registry && registry.rollbacks) || [])].reverse()) {
    const tr = document.createElement("tr");
    cell(tr, new Date(r.at_ms).toLocaleString());
    cell(tr, short(r.from_sha256));
    cell(tr, short(r.sha256));
    cell(tr, r.actor);
    cell(tr, r.reason);
    rb.append(tr);
  }
}

async function rollback(ev) {
  ev.preventDefault();
  const version = $("rollback-version").value;
  const reason = $("rollback-reason").value.trim();
  try {
    const r = await api(`/api/v1/jobs/${state.job}/models/rollback`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ version, reason }),
    });
    $("rollback-reason").value = "";
    await refreshJobData();
    await renderPage();
    $("rollback-status").textContent = `Rolled back to ${short(r.rollback.sha256)} (round ${r.round}); recorded in the audit log.`;
    showError(null);
  } catch (e) { showError(e); }
}

// The experts of the head's round and of every round, from the strategy's
// per-expert aggregates (never one robot's figures).
function renderExpertSteps(rounds, registry) {
  const withExperts = rounds.filter((r) => r.experts && r.experts.length);
  const table = document.querySelector("#experts-table tbody");
  table.replaceChildren();
  const note = $("experts-steps-note");
  if (!withExperts.length) {
    note.textContent = "No per-expert figures: only expert-wise aggregation reports them, and only to operator tokens (without DP, rounds with different robots could be differenced into one robot's task mix).";
    $("chart-expert-share").replaceChildren();
    $("chart-expert-step").replaceChildren();
    return;
  }
  const E = Math.max(...withExperts.map((r) => r.experts.length));
  const palette = ["#2f6fdb", "#1f9d55", "#d98e04", "#d64545", "#7a4bd6", "#0f8b8d", "#b5478a", "#5a6b7d"];
  const series = (key) => Array.from({ length: E }, (_, e) => ({
    label: `expert ${e}`, color: palette[e % palette.length],
    points: withExperts.filter((r) => r.experts[e]).map((r) => [r.round, r.experts[e][key]]),
  }));
  drawChart($("chart-expert-share"), series("share"), { yMin: 0 });
  drawChart($("chart-expert-step"), series("step_norm"), { yMin: 0 });
  const head = registry && registry.head ? registry.head.sha256 : null;
  const last = withExperts.find((r) => r.model_sha256 === head) || withExperts[withExperts.length - 1];
  last.experts.forEach((x, e) => {
    const tr = document.createElement("tr");
    cell(tr, e);
    cell(tr, `${(100 * x.share).toFixed(1)} %`);
    cell(tr, fmtNum(x.weight));
    cell(tr, x.updated ? "yes" : "no (below the share floor)", x.updated ? "" : "status-failed");
    cell(tr, fmtNum(x.step_norm));
    cell(tr, robotsText(x.client_share, last.participants));
    cell(tr, tasksText(x.task_share));
    table.append(tr);
  });
  const reported = last.experts.some((x) => x.client_share != null || (x.task_share && x.task_share.length));
  note.textContent = `Round ${last.round}: each expert's share of the fleet's data (examples × gate mass, summed over robots), the norm of its step` +
    (reported
      ? ", how many of the round's robots trained it and which tasks' examples did (task numbers in the policy's task order). These come from the round's sum of the robots' self-reported figures (a lying robot can skew them, not the model); figures out of range are marked inconsistent."
      : ". Which tasks and how many robots trained each expert is shown when the robots send reports (tensorguard.lora.expert_state_dict(policy, report=True), the default); this model carries none.");
}

// Success per task of each committed version, from the robots' rollout
// evaluations (the gate's, else the federated evaluation's), summed over
// robots by the coordinator.
function renderTaskSuccess(rounds) {
  const versions = rounds.filter((r) => r.status === "committed")
    .map((r) => [r.round, (r.gate && r.gate.tasks) || (r.federated && r.federated.tasks) || []])
    .filter(([, tasks]) => tasks.length);
  const note = $("task-success-note");
  if (!versions.length) {
    note.textContent = "No per-task figures: robots report them from a rollout evaluation (metrics[\"tasks\"] = {task: (successes, episodes)} in an evaluate handler).";
    $("chart-task-success").replaceChildren();
    return;
  }
  const names = [...new Set(versions.flatMap(([, tasks]) => tasks.map((t) => t.task)))].sort();
  const palette = ["#2f6fdb", "#1f9d55", "#d98e04", "#d64545", "#7a4bd6", "#0f8b8d", "#b5478a", "#5a6b7d"];
  const series = names.map((name, i) => ({
    label: name, color: palette[i % palette.length],
    points: versions.map(([round, tasks]) => {
      const t = tasks.find((x) => x.task === name);
      return [round, t && t.episodes ? t.successes / t.episodes : null];
    }).filter((p) => p[1] !== null),
  }));
  drawChart($("chart-task-success"), series, { yMin: 0, yMax: 1 });
  const [round, last] = versions[versions.length - 1];
  note.textContent = `Each committed version's success rate per task, from the robots' own held-out rollouts (summed over robots). Version of round ${round}: ` +
    last.map((t) => `${t.task} ${t.successes}/${t.episodes}`).join(", ") + ".";
}

// "12 of 50 (24 %)" from a share of the round's robots.
function robotsText(share, participants) {
  if (share == null || !Number.isFinite(share)) return "—";
  if (share < -1e-6 || share > 1 + 1e-6) return `inconsistent (${fmtNum(share)}: robots' reports do not add up)`;
  const pct = `${(100 * share).toFixed(0)} %`;
  return participants ? `${Math.round(share * participants)} of ${participants} (${pct})` : pct;
}

// The tasks that trained an expert, largest share first: "task 2: 75 %, task 0: 25 %".
function tasksText(shares) {
  if (!shares || !shares.length) return "—";
  if (shares.some((v) => !Number.isFinite(v) || v < -1e-6)) return "inconsistent (negative task mass in robots' reports)";
  const top = shares.map((v, t) => [t, v]).filter(([, v]) => Number.isFinite(v) && v >= 0.05)
    .sort((a, b) => b[1] - a[1]).slice(0, 4);
  return top.length ? top.map(([t, v]) => `task ${t}: ${(100 * v).toFixed(0)} %`).join(", ") : "none over 5 %";
}
