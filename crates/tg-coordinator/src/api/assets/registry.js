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
    table.append(tr);
  });
  note.textContent = `Round ${last.round}: each expert's share of the fleet's data (examples × gate mass, summed over robots) and the norm of its step. ` +
    "Which robot or task trained an expert is not shown: that is each robot's own data, and under secure aggregation the coordinator never sees it.";
}
