// TensorGuard dashboard: SVG charts and the pages drawn mostly as charts
// (training, compression, privacy, experts). No library, no sample data:
// every function draws exactly what it is given, or says there is nothing.
"use strict";

const SVG = "http://www.w3.org/2000/svg";

function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function fmtNum(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a < 0.01 || a >= 1e6)) return v.toExponential(2);
  return (Math.round(v * 1000) / 1000).toString();
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  let v = n;
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${Math.round(v * 10) / 10} ${units[i]}`;
}

// series: [{label, color, points: [[x, y], ...]}]; opts: {yMax, yMin, bars, hline}
function drawChart(container, series, opts) {
  opts = opts || {};
  container.replaceChildren();
  const pts = series.flatMap((s) => s.points.filter((p) => p[1] !== null && Number.isFinite(p[1])));
  if (pts.length === 0) {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = opts.empty || "No data yet for this job.";
    container.append(p);
    return;
  }
  const W = 800, H = 240, L = 56, R = 16, T = 12, B = 30;
  const xs = pts.map((p) => p[0]);
  const ys = pts.map((p) => p[1]).concat(opts.hline !== undefined ? [opts.hline] : []);
  const xMin = Math.min(...xs), xMax = Math.max(...xs);
  let yMin = opts.yMin !== undefined ? opts.yMin : Math.min(0, ...ys);
  let yMax = opts.yMax !== undefined ? opts.yMax : Math.max(...ys);
  if (yMax === yMin) yMax = yMin + 1;
  const xTicks = [...new Set(xs)].sort((a, b) => a - b);
  // Keep marks off the axes: half a band on each side.
  const pad = Math.min(60, (W - L - R) / (2 * Math.max(1, xTicks.length)));
  const sx = (x) => L + pad + (xMax === xMin ? (W - L - R - 2 * pad) / 2 : ((x - xMin) / (xMax - xMin)) * (W - L - R - 2 * pad));
  const sy = (y) => T + (1 - (y - yMin) / (yMax - yMin)) * (H - T - B);
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
  for (let i = 0; i <= 4; i++) {
    const y = yMin + ((yMax - yMin) * i) / 4;
    svg.append(svgEl("line", { class: "grid", x1: L, x2: W - R, y1: sy(y), y2: sy(y) }));
    svg.append(svgEl("text", { x: L - 6, y: sy(y) + 4, "text-anchor": "end" }, fmtNum(y)));
  }
  svg.append(svgEl("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
  svg.append(svgEl("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
  const step = Math.max(1, Math.ceil(xTicks.length / 12));
  xTicks.filter((_, i) => i % step === 0).forEach((x) =>
    svg.append(svgEl("text", { x: sx(x), y: H - B + 16, "text-anchor": "middle" }, `${x}`)));
  if (opts.hline !== undefined) {
    svg.append(svgEl("line", { x1: L, x2: W - R, y1: sy(opts.hline), y2: sy(opts.hline), stroke: "#d64545", "stroke-dasharray": "6 4" }));
    svg.append(svgEl("text", { x: W - R, y: sy(opts.hline) - 4, "text-anchor": "end" }, opts.hlineLabel || ""));
  }
  series.forEach((s) => {
    const good = s.points.filter((p) => p[1] !== null && Number.isFinite(p[1]));
    if (opts.bars) {
      const bw = Math.max(4, Math.min(36, (W - L - R) / Math.max(1, xTicks.length) - 4));
      good.forEach(([x, y]) => {
        const y0 = sy(Math.max(yMin, 0)), y1 = sy(y);
        svg.append(svgEl("rect", { x: sx(x) - bw / 2, y: Math.min(y0, y1), width: bw, height: Math.abs(y0 - y1), fill: s.color },));
      });
    } else {
      const d = good.map(([x, y], i) => `${i ? "L" : "M"}${sx(x)},${sy(y)}`).join(" ");
      svg.append(svgEl("path", { d, fill: "none", stroke: s.color, "stroke-width": 2 }));
      good.forEach(([x, y]) => {
        const c = svgEl("circle", { cx: sx(x), cy: sy(y), r: 3, fill: s.color });
        c.append(svgEl("title", {}, `${s.label} round ${x}: ${fmtNum(y)}`));
        svg.append(c);
      });
    }
  });
  container.append(svg);
}

// A half-circle gauge of `fraction` (0..1+).
function drawGauge(container, fraction, label) {
  container.replaceChildren();
  const W = 260, H = 150, cx = 130, cy = 130, r = 100;
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img" });
  const arc = (f) => {
    const a = Math.PI * (1 - Math.min(Math.max(f, 0), 1));
    return [cx + r * Math.cos(a), cy - r * Math.sin(a)];
  };
  const [x0, y0] = arc(0), [x1, y1] = arc(1);
  svg.append(svgEl("path", { d: `M${x0},${y0} A${r},${r} 0 0 1 ${x1},${y1}`, fill: "none", stroke: "#eaecf0", "stroke-width": 18 }));
  if (fraction !== null && fraction > 0) {
    const [xf, yf] = arc(fraction);
    const color = fraction >= 1 ? "#d64545" : fraction >= 0.8 ? "#d98e04" : "#1f9d55";
    svg.append(svgEl("path", { d: `M${x0},${y0} A${r},${r} 0 0 1 ${xf},${yf}`, fill: "none", stroke: color, "stroke-width": 18 }));
  }
  svg.append(svgEl("text", { x: cx, y: cy - 20, "text-anchor": "middle", "font-size": 26 }, fraction === null ? "–" : `${Math.round(fraction * 100)}%`));
  svg.append(svgEl("text", { x: cx, y: cy, "text-anchor": "middle" }, label));
  container.append(svg);
}

function renderTraining(rounds) {
  const committed = rounds.filter((r) => r.status === "committed");
  drawChart(document.getElementById("chart-accuracy"),
    [{ label: "accuracy", color: "#2f6fdb", points: committed.map((r) => [r.round, r.accuracy]) }], { yMin: 0, yMax: 1 });
  drawChart(document.getElementById("chart-loss"),
    [{ label: "loss", color: "#d98e04", points: committed.map((r) => [r.round, r.loss]) }]);
}

// models: [{round, bytes}] — the committed model's safetensors size per round.
function renderCompression(rounds, models) {
  const size = new Map(models.map((m) => [m.round, m.bytes]));
  const sizes = models.map((m) => m.bytes);
  const fallback = sizes.length ? sizes[sizes.length - 1] : null;
  const rows = rounds.filter((r) => r.upload_bytes > 0 && r.participants > 0).map((r) => {
    const model = size.get(r.round) || fallback;
    const dense = model === null ? null : model * r.participants;
    return { round: r.round, ratio: dense === null ? null : dense / r.upload_bytes, saved: dense === null ? null : dense - r.upload_bytes };
  });
  drawChart(document.getElementById("chart-ratio"),
    [{ label: "ratio", color: "#2f6fdb", points: rows.map((r) => [r.round, r.ratio]) }],
    { bars: true, empty: "No uploads recorded yet (or no committed model to compare with)." });
  drawChart(document.getElementById("chart-saved"),
    [{ label: "bytes saved", color: "#1f9d55", points: rows.map((r) => [r.round, r.saved]) }],
    { bars: true, empty: "No uploads recorded yet." });
}

function renderPrivacy(p) {
  const alertBox = document.getElementById("privacy-alert");
  const summary = document.getElementById("privacy-summary");
  const tbody = document.querySelector("#ledger tbody");
  tbody.replaceChildren();
  if (p.target_epsilon === null || p.target_epsilon === undefined) {
    drawGauge(document.getElementById("gauge"), null, "no DP budget");
    summary.textContent = "This job trains without differential privacy: there is no ε to spend.";
    alertBox.hidden = true;
    drawChart(document.getElementById("chart-epsilon"), [], { empty: "No privacy ledger for this job." });
    return;
  }
  const frac = p.fraction_used === null ? 0 : p.fraction_used;
  drawGauge(document.getElementById("gauge"), frac, `ε ${fmtNum(p.epsilon_spent || 0)} of ${fmtNum(p.target_epsilon)}`);
  summary.textContent = `Spent ε = ${fmtNum(p.epsilon_spent || 0)} of the target ${fmtNum(p.target_epsilon)} at δ = ${fmtNum(p.delta)}; remaining ${fmtNum(p.epsilon_remaining === null ? p.target_epsilon : p.epsilon_remaining)}.`;
  alertBox.hidden = frac < 0.8;
  alertBox.classList.toggle("critical", frac >= 1);
  alertBox.textContent = frac >= 1
    ? `Privacy budget exhausted: ${Math.round(frac * 100)}% of ε = ${fmtNum(p.target_epsilon)} spent. No further round will run.`
    : `Privacy budget alert: ${Math.round(frac * 100)}% of ε = ${fmtNum(p.target_epsilon)} spent (alert at 80%).`;
  drawChart(document.getElementById("chart-epsilon"),
    [{ label: "ε after round", color: "#7a3fd1", points: p.ledger.map((e) => [e.round, e.epsilon_after]) }],
    { yMin: 0, hline: p.target_epsilon, hlineLabel: `target ε = ${fmtNum(p.target_epsilon)}` });
  for (const e of p.ledger) {
    const tr = document.createElement("tr");
    const spent = e.spent || {};
    [e.round, e.mechanism, fmtNum(spent.sampling_rate), fmtNum(spent.noise_multiplier), spent.steps, fmtNum(e.epsilon_after), fmtNum(e.delta), e.accountant]
      .forEach((v) => { const td = document.createElement("td"); td.textContent = `${v}`; tr.append(td); });
    tbody.append(tr);
  }
}

// Parses a safetensors file and returns the L2 norm of each expert's
// tensors: the slices along the leading dimension E of `*lora_B` and
// `experts.*` tensors when the model carries `tg.expert_weight` [E]
// (expert-wise aggregation's layout), else tensors named `expert.N` /
// `experts.N` / `expert_N`.
function expertNorms(buffer) {
  const view = new DataView(buffer);
  const headerLen = Number(view.getBigUint64(0, true));
  if (headerLen <= 0 || headerLen > buffer.byteLength - 8) throw new Error("not a safetensors file");
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 8, headerLen)));
  const base = 8 + headerLen;
  const weights = header["tg.expert_weight"];
  const E = weights && weights.shape.length === 1 ? weights.shape[0] : 0;
  const norms = new Map();
  const add = (k, s) => norms.set(k, (norms.get(k) || 0) + s);
  const names = [];
  for (const [name, t] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    names.push(`${name} [${t.shape.join("×")}]`);
    if (t.dtype !== "F32" || name.startsWith("tg.")) continue;
    const [a, b] = t.data_offsets;
    const f = new Float32Array(buffer.slice(base + a, base + b));
    if (E > 0 && t.shape[0] === E && (/lora_B$/.test(name) || /(^|\.)experts(\.|$)/.test(name))) {
      const per = f.length / E;
      for (let e = 0; e < E; e++) {
        let s = 0;
        for (let i = e * per; i < (e + 1) * per; i++) s += f[i] * f[i];
        add(e, s);
      }
      continue;
    }
    const m = /experts?[._](\d+)/i.exec(name);
    if (!m) continue;
    let s = 0;
    for (const v of f) s += v * v;
    add(Number(m[1]), s);
  }
  return { names, experts: [...norms.entries()].sort((x, y) => x[0] - y[0]).map(([k, s]) => [k, Math.sqrt(s)]) };
}

function renderExperts(result, model) {
  const note = document.getElementById("experts-note");
  const chart = document.getElementById("chart-experts");
  if (!model) {
    note.textContent = "No committed model yet for this job.";
    chart.replaceChildren();
    return;
  }
  if (result.experts.length === 0) {
    note.textContent = `This job's model (round ${model.round}, ${fmtBytes(model.bytes)}) has no experts. Its tensors: ${result.names.join(", ")}.`;
    chart.replaceChildren();
    return;
  }
  note.textContent = `L2 norm of each expert's adapter weights in the head (the model of round ${model.round}).`;
  drawChart(chart, [{ label: "expert weight norm", color: "#2f6fdb", points: result.experts }], { bars: true, yMin: 0 });
}
