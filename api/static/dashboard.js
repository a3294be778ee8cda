// funnelsync dashboard: vanilla JS, canvas charts, no external resources.
// Reads /v1/metrics/funnel, /v1/metrics/trial-cohorts and /v1/customers with the session cookie of the
// sign-in page (or cached HTTP Basic credentials); writes echo the CSRF cookie in X-CSRF-Token.
"use strict";

const $ = (id) => document.getElementById(id);
// Okabe–Ito colours (blue, orange, vermillion): told apart with every common colour-vision deficiency,
// and by lightness alone in greyscale.
const COLORS = { accent: "#0072B2", accent2: "#E69F00", accent3: "#D55E00", line: "#e3e6ee", muted: "#5d6577",
  ink: "#1d2433" };
const hitRegions = new Map(); // canvas id -> [{x0, x1, text}]

function isoDay(d) {
  return d.getFullYear() + "-" + String(d.getMonth() + 1).padStart(2, "0") + "-" + String(d.getDate()).padStart(2, "0");
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

async function getJSON(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (Array.isArray(value)) value.forEach((v) => query.append(key, v));
    else if (value !== undefined && value !== null && value !== "") query.append(key, value);
  }
  const url = path + (query.toString() ? "?" + query : "");
  const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (response.status === 401) { window.location.assign("/login"); throw new Error("signed out"); }
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) {
    const reason = body && (body.message || (body.detail && JSON.stringify(body.detail)));
    throw new Error(`${path}: ${response.status} ${reason || response.statusText}`);
  }
  return body;
}

function csrfToken() {
  const found = document.cookie.split(";").map((c) => c.trim()).find((c) => c.startsWith("fs_csrf="));
  return found ? decodeURIComponent(found.slice("fs_csrf=".length)) : "";
}

// A write through the API: JSON body, the session's CSRF token, errors as thrown Error with the body.
async function sendJSON(method, path, payload) {
  const response = await fetch(path, {
    method, credentials: "same-origin",
    headers: { Accept: "application/json", "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
    body: payload === undefined ? undefined : JSON.stringify(payload),
  });
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) {
    const error = new Error(`${path}: ${response.status} ${(body && body.message) || response.statusText}`);
    error.body = body;
    throw error;
  }
  return body;
}

// ---------------------------------------------------------------- labels and ticks

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

function isoWeek(d) {
  const t = new Date(Date.UTC(d.getFullYear(), d.getMonth(), d.getDate()));
  const dayNum = t.getUTCDay() || 7;
  t.setUTCDate(t.getUTCDate() + 4 - dayNum);
  const yearStart = new Date(Date.UTC(t.getUTCFullYear(), 0, 1));
  return { year: t.getUTCFullYear(), week: Math.ceil(((t - yearStart) / 86400000 + 1) / 7) };
}

// A period's first day (YYYY-MM-DD) as people read it: "Jan 2026", "W03 2026", "Q1 2026", "2 Jan 2026", "2026".
function periodLabel(period, interval) {
  const [y, m, d] = String(period).slice(0, 10).split("-").map(Number);
  if (!y) return String(period);
  if (interval === "year") return String(y);
  if (interval === "quarter") return `Q${Math.floor((m - 1) / 3) + 1} ${y}`;
  if (interval === "month") return `${MONTHS[m - 1]} ${y}`;
  if (interval === "week") {
    const w = isoWeek(new Date(y, m - 1, d));
    return `W${String(w.week).padStart(2, "0")} ${w.year}`;
  }
  return `${d} ${MONTHS[m - 1]} ${y}`;
}

// Axis ticks from 0: a "nice" step (1, 2, 2.5, 5 × 10^n), whole numbers only for counts, so no two
// ticks ever read the same; an empty chart gets 0 and 1.
function axisTicks(maxValue, whole) {
  const top = maxValue > 0 ? maxValue : 1;
  let step = top / 4;
  const power = Math.pow(10, Math.floor(Math.log10(step)));
  step = [1, 2, 2.5, 5, 10].map((f) => f * power).find((s) => s >= step) || 10 * power;
  if (whole) step = Math.max(1, Math.ceil(step));
  const ticks = [];
  for (let v = 0; v < top + step * 0.999; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

// ---------------------------------------------------------------- charts

function setupCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 400;
  // The drawn height, kept apart from the backing store's: canvas.height (set below, times the pixel ratio)
  // is the height attribute too, and reading it back grew the chart on every redraw on a high-DPI screen.
  if (!canvas.dataset.height) canvas.dataset.height = canvas.getAttribute("height") || "220";
  const height = Number(canvas.dataset.height);
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  canvas.style.height = height + "px";
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  ctx.font = "11px system-ui, sans-serif";
  return { ctx, width, height };
}

function frame(ctx, width, height, ticks, fmt, labels) {
  const pad = { left: 52, right: 10, top: 10, bottom: 34 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const maxValue = ticks[ticks.length - 1];
  ctx.strokeStyle = COLORS.line;
  ctx.fillStyle = COLORS.muted;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  ticks.forEach((value) => {
    const y = pad.top + plotH - (plotH * value) / maxValue;
    ctx.beginPath(); ctx.moveTo(pad.left, y); ctx.lineTo(width - pad.right, y); ctx.stroke();
    ctx.fillText(fmt(value, ticks.length > 1 ? ticks[1] - ticks[0] : 1), pad.left - 6, y);
  });
  const slot = plotW / Math.max(labels.length, 1);
  const every = Math.max(1, Math.ceil(labels.length / Math.max(1, Math.floor(plotW / 70))));
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  labels.forEach((label, i) => {
    if (i % every === 0) ctx.fillText(label, pad.left + slot * i + slot / 2, pad.top + plotH + 8);
  });
  return { pad, plotW, plotH, slot, maxValue };
}

// The chart's figures as a table beside the canvas (read by screen readers, and by the browser test).
function dataTable(canvas, labels, columns) {
  const table = document.createElement("table");
  table.className = "sr-only chart-data";
  table.id = canvas.id + "-data";
  const head = document.createElement("tr");
  ["Period", ...columns.map((c) => c.title)].forEach((t) => {
    const th = document.createElement("th"); th.textContent = t; head.appendChild(th);
  });
  table.createTHead().appendChild(head);
  const body = table.createTBody();
  labels.forEach((label, i) => {
    const tr = document.createElement("tr");
    tr.appendChild(cell(label));
    columns.forEach((c) => tr.appendChild(cell(c.format(c.values[i]))));
    body.appendChild(tr);
  });
  const old = document.getElementById(table.id);
  if (old) old.replaceWith(table); else canvas.after(table);
}

function drawBars(canvas, labels, stacks, colors, fmt, describe) {
  const { ctx, width, height } = setupCanvas(canvas);
  const totals = labels.map((_, i) => stacks.reduce((sum, s) => sum + (s[i] || 0), 0));
  const { pad, plotH, slot, maxValue } = frame(ctx, width, height, axisTicks(Math.max(0, ...totals), true), fmt,
    labels);
  const regions = [];
  labels.forEach((label, i) => {
    const barW = Math.max(2, slot * 0.7);
    const x = pad.left + slot * i + (slot - barW) / 2;
    let base = pad.top + plotH;
    stacks.forEach((series, k) => {
      const h = (plotH * (series[i] || 0)) / maxValue;
      ctx.fillStyle = colors[k];
      ctx.fillRect(x, base - h, barW, h);
      base -= h;
    });
    regions.push({ x0: pad.left + slot * i, x1: pad.left + slot * (i + 1), text: describe(i) });
  });
  hitRegions.set(canvas.id, regions);
}

function drawLine(canvas, labels, values, fmt, describe, whole, color) {
  const { ctx, width, height } = setupCanvas(canvas);
  const present = values.filter((v) => v !== null && v !== undefined);
  const { pad, plotH, slot, maxValue } = frame(ctx, width, height, axisTicks(Math.max(0, ...present), whole), fmt,
    labels);
  ctx.strokeStyle = color || COLORS.accent;
  ctx.fillStyle = color || COLORS.accent;
  ctx.lineWidth = 2;
  let drawing = false;
  ctx.beginPath();
  values.forEach((v, i) => {
    const x = pad.left + slot * i + slot / 2;
    if (v === null || v === undefined) { drawing = false; return; } // a gap: no trials, no data
    const y = pad.top + plotH - (plotH * v) / maxValue;
    if (drawing) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    drawing = true;
  });
  ctx.stroke();
  values.forEach((v, i) => {
    if (v === null || v === undefined) return;
    const x = pad.left + slot * i + slot / 2;
    const y = pad.top + plotH - (plotH * v) / maxValue;
    ctx.beginPath(); ctx.arc(x, y, 3, 0, 2 * Math.PI); ctx.fill();
  });
  ctx.lineWidth = 1;
  hitRegions.set(canvas.id, labels.map((_, i) => ({
    x0: pad.left + slot * i, x1: pad.left + slot * (i + 1), text: describe(i),
  })));
}

// By keyboard: a chart takes the focus (Tab); the arrow keys, Home and End step through its periods and
// the tooltip shows each one's figures, as hovering does.
function attachKeyboard(canvas) {
  const tip = $("tooltip");
  let index = -1;
  canvas.tabIndex = 0;
  canvas.setAttribute("role", "img");
  const title = canvas.closest("figure").querySelector("figcaption").firstChild.textContent.trim();
  canvas.setAttribute("aria-label", `${title} chart: arrow keys step through the periods`);
  canvas.addEventListener("keydown", (event) => {
    const regions = hitRegions.get(canvas.id) || [];
    if (!regions.length) return;
    const moves = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: regions.length - 1 };
    if (!(event.key in moves)) return;
    event.preventDefault();
    index = Math.min(regions.length - 1, Math.max(0, moves[event.key]));
    const rect = canvas.getBoundingClientRect();
    tip.textContent = regions[index].text;
    tip.style.left = rect.left + Math.min(regions[index].x0, rect.width - 200) + "px";
    tip.style.top = rect.top + 8 + "px";
    tip.hidden = false;
  });
  canvas.addEventListener("blur", () => { tip.hidden = true; index = -1; });
}

function attachTooltip(canvas) {
  attachKeyboard(canvas);
  const tip = $("tooltip");
  canvas.addEventListener("mousemove", (event) => {
    const rect = canvas.getBoundingClientRect();
    const x = event.clientX - rect.left;
    const hit = (hitRegions.get(canvas.id) || []).find((r) => x >= r.x0 && x < r.x1);
    if (!hit) { tip.hidden = true; return; }
    tip.textContent = hit.text;
    tip.style.left = event.clientX + 12 + "px";
    tip.style.top = event.clientY + 12 + "px";
    tip.hidden = false;
  });
  canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
}

// ---------------------------------------------------------------- metrics

const pct = (v) => (v === null || v === undefined ? "–" : (v * 100).toFixed(1) + "%");
const days = (v) => (v === null || v === undefined ? "–" : v.toFixed(1) + " d");
const count = (v) => String(Math.round(v));

// ---------------------------------------------------------------- segment

// A value as the filter grammar reads it: a plain word bare, anything else double-quoted (backslash
// escapes " and \), so a source named `EU "new" leads` or an owner with spaces stays one value.
function filterValue(value, bare) {
  const text = String(value);
  if (bare && /^[A-Za-z0-9_.@+:-]+$/.test(text) && !/^(and|or|in|not)$/i.test(text)) return text;
  return '"' + text.replace(/\\/g, "\\\\").replace(/"/g, '\\"') + '"';
}

let attributeTypes = {};

// The segment controls as conditions of the shared filter grammar (storage/filters.py), then the
// free-text conditions; every one is a separate --where (they AND together).
function segmentConditions() {
  const out = [];
  const pick = (id, field, bare) => { const v = $(id).value; if (v) out.push(`${field} = ${filterValue(v, bare)}`); };
  pick("seg-source", "source", true);
  pick("seg-country", "country", true);
  pick("seg-status", "status", true);
  pick("seg-owner", "owner", true);
  pick("seg-tag", "tag", true);
  const key = $("seg-attr").value;
  const value = $("seg-attr-value").value.trim();
  if (key && value) {
    // Text attributes are quoted; numbers, dates and booleans are written bare so they compare by type.
    const bare = attributeTypes[key] && attributeTypes[key] !== "String";
    out.push(`custom.${key} ${$("seg-attr-op").value} ${filterValue(value, bare)}`);
  }
  return out.concat($("where").value.split(";").map((s) => s.trim()).filter(Boolean));
}

// POSIX shell single quotes: nothing inside is expanded; a ' is closed, escaped and reopened.
function shellQuote(text) { return "'" + String(text).replace(/'/g, "'\\''") + "'"; }

function cliCommand(params) {
  const parts = ["funnelsync metrics", "--start", params["start-date"], "--end", params["end-date"],
    "--interval", params.interval];
  if (params["within-days"]) parts.push("--within-days", params["within-days"]);
  params.where.forEach((w) => parts.push("--where", shellQuote(w)));
  return parts.join(" ");
}

function fillSelect(select, values) {
  const keep = select.value;
  const options = values.map((v) => {
    const o = document.createElement("option");
    o.value = typeof v === "object" ? v.value : v;
    o.textContent = typeof v === "object" ? v.label : v;
    return o;
  });
  select.replaceChildren(select.options[0], ...options);
  select.value = keep;
  if (select.value !== keep && keep) {
    // A shared link may name a value this database lacks: keep it, so the filter still says what was asked.
    const o = document.createElement("option"); o.value = keep; o.textContent = keep;
    select.appendChild(o); select.value = keep;
  }
}

async function loadSegments() {
  const choices = await getJSON("/dashboard/segments");
  attributeTypes = Object.fromEntries(choices.attributes.map((a) => [a.key, a.type]));
  fillSelect($("seg-source"), choices.sources.map((s) => s.name));
  fillSelect($("source"), choices.sources.map((s) => ({ value: s.uuid, label: s.name })));
  fillSelect($("seg-country"), choices.countries);
  fillSelect($("seg-status"), choices.statuses);
  fillSelect($("seg-owner"), choices.owners);
  fillSelect($("seg-tag"), choices.tags);
  fillSelect($("seg-attr"), choices.attributes.map((a) => ({ value: a.key, label: `${a.key} (${a.type})` })));
  addLeadForm(choices.sources);
  $("bulk-field").querySelectorAll("option.custom").forEach((o) => o.remove());
  choices.attributes.forEach((a) => {
    const o = document.createElement("option");
    o.className = "custom"; o.value = "custom." + a.key; o.textContent = `${a.key} (${a.type})`;
    $("bulk-field").appendChild(o);
  });
}

function metricParams() {
  return {
    "start-date": $("start").value, "end-date": $("end").value, interval: $("interval").value,
    "within-days": $("within").value, where: segmentConditions(),
  };
}

let lastSeries = [];
let lastInterval = "month";

function renderFunnel(series, interval) {
  lastSeries = series;
  lastInterval = interval;
  const labels = series.map((row) => periodLabel(row.period, interval));
  const leads = series.reduce((s, r) => s + r.leads, 0);
  const trials = series.reduce((s, r) => s + r.free_trials, 0);
  const converted = series.reduce((s, r) => s + r.trials_converted, 0);
  const cycleN = series.reduce((s, r) => s + (r.sales_cycle_n || 0), 0);
  const cycleSum = series.reduce((s, r) => s + (r.avg_sales_cycle_days || 0) * (r.sales_cycle_n || 0), 0);
  $("total-leads").textContent = leads + " leads";
  $("total-trials").textContent = trials + " trials";
  $("total-rate").textContent = trials ? pct(converted / trials) + ` (${converted}/${trials})` : "–";
  $("total-cycle").textContent = cycleN ? days(cycleSum / cycleN) + " over " + cycleN : "–";
  const withTrial = series.map((r) => r.leads_with_trial);
  const without = series.map((r) => r.non_trial_leads);
  drawBars($("chart-leads"), labels, [withTrial, without], [COLORS.accent, COLORS.accent2], count,
    (i) => `${labels[i]}: ${series[i].leads} leads (${series[i].leads_with_trial} with a trial, ` +
      `${series[i].non_trial_leads} without)`);
  dataTable($("chart-leads"), labels, [
    { title: "Leads", values: series.map((r) => r.leads), format: String },
    { title: "With a trial", values: withTrial, format: String },
    { title: "Without", values: without, format: String },
  ]);
  drawBars($("chart-trials"), labels, [series.map((r) => r.free_trials)], [COLORS.accent], count,
    (i) => `${labels[i]}: ${series[i].free_trials} free trials`);
  dataTable($("chart-trials"), labels, [
    { title: "Free trials", values: series.map((r) => r.free_trials), format: String }]);
  drawLine($("chart-rate"), labels, series.map((r) => r.trial_to_paid_rate), (v, step) => (v * 100).toFixed(step * 100 < 1 ? 1 : 0) + "%",
    (i) => `${labels[i]}: ${pct(series[i].trial_to_paid_rate)} (${series[i].trials_converted}/${series[i].free_trials})`);
  dataTable($("chart-rate"), labels, [
    { title: "Trial-to-paid", values: series.map((r) => r.trial_to_paid_rate), format: pct },
    { title: "Converted", values: series.map((r) => r.trials_converted), format: String }]);
  drawLine($("chart-cycle"), labels, series.map((r) => r.avg_sales_cycle_days), (v) => Math.round(v) + " d",
    (i) => `${labels[i]}: ${days(series[i].avg_sales_cycle_days)} (n=${series[i].sales_cycle_n})`, true, COLORS.accent3);
  dataTable($("chart-cycle"), labels, [
    { title: "Average sales cycle", values: series.map((r) => r.avg_sales_cycle_days), format: days }]);
}

async function renderEmptyState(series, call) {
  const empty = !series.some((r) => r.leads || r.free_trials || r.new_subscribers);
  const box = $("empty");
  if (!empty) { box.hidden = true; return; }
  let where = "There is no data yet: import a CSV or sync a source.";
  try {
    const range = await getJSON("/dashboard/data-range");
    if (range.first) where = `The data runs from ${range.first} to ${range.last} (${range.customers} customers).`;
  } catch (_) { /* the message without the range */ }
  if (!isLatest("metrics", call)) return;
  box.textContent = "No data in this range. " + where;
  box.hidden = false;
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function renderCohorts(data, interval) {
  const table = $("cohorts");
  const head = document.createElement("tr");
  ["Trial cohort", "Trials", "Converted"].concat(data.windows.map((n) => n + " days")).forEach((title, i) => {
    const th = document.createElement("th");
    th.textContent = title;
    if (i > 0) th.className = "num";
    head.appendChild(th);
  });
  table.tHead.replaceChildren(head);
  const rows = data.cohorts.map((row) => {
    const tr = document.createElement("tr");
    tr.append(cell(periodLabel(row.period, interval)), cell(String(row.size), "num"), cell(pct(row.rate), "num"));
    data.windows.forEach((n) => {
      const share = row.share_within[String(n)];
      const td = cell(pct(share), "num");
      if (share !== null && share !== undefined) td.style.background = `rgba(0, 114, 178, ${0.08 + share * 0.5})`;
      td.title = `${row.converted_within[String(n)]} of ${row.size} converted within ${n} days`;
      tr.appendChild(td);
    });
    return tr;
  });
  table.tBodies[0].replaceChildren(...rows);
}

// The latest call of each loader (charts, table, customer page). Two calls overlap when a view changes
// before the last one answered (two quick changes, a link's hashchange and a write's refresh): an earlier
// call answered late must not paint over the newer view.
const latestCall = {};
function startCall(name) { latestCall[name] = (latestCall[name] || 0) + 1; return latestCall[name]; }
function isLatest(name, call) { return latestCall[name] === call; }

async function loadMetrics() {
  const call = startCall("metrics");
  showError("");
  try {
    const params = metricParams();
    $("cli-filter").textContent = cliCommand(params);
    const [funnel, cohorts] = await Promise.all([
      getJSON("/v1/metrics/funnel", params),
      getJSON("/v1/metrics/trial-cohorts", { ...params, "within-days": undefined }),
    ]);
    if (!isLatest("metrics", call)) return;
    renderFunnel(funnel.series, params.interval);
    renderCohorts(cohorts, params.interval);
    await renderEmptyState(funnel.series, call);
  } catch (error) {
    if (isLatest("metrics", call)) showError(error.message);
  }
}

// ---------------------------------------------------------------- customers

const day = (iso) => (iso ? iso.slice(0, 10) : "");

// The table shows the charts' segment (the applied filter) narrowed by its own search, status and source,
// sorted by a header and paged; "Export CSV" downloads every row of that view.
const table = { sort: "lead_created_at", order: "desc", page: 1, pages: 1, where: [] };

function customerRow(c) {
  const tr = document.createElement("tr");
  const status = document.createElement("span");
  status.className = "status " + c.status;
  status.textContent = c.status;
  const statusCell = document.createElement("td");
  statusCell.appendChild(status);
  const tags = document.createElement("td");
  (c.attributes && c.attributes.tags || []).forEach((t) => {
    const span = document.createElement("span");
    span.className = "tag";
    span.textContent = t;
    tags.appendChild(span);
  });
  names.set(c.uuid, c.name || c.email || c.uuid);
  const pick = document.createElement("td");
  const box = document.createElement("input");
  box.type = "checkbox";
  box.className = "pick";
  box.value = c.uuid;
  box.checked = selected.has(c.uuid);
  box.setAttribute("aria-label", "Select " + (c.name || c.email || c.uuid));
  box.addEventListener("change", () => {
    if (box.checked) selected.add(c.uuid); else selected.delete(c.uuid);
    showSelection();
  });
  pick.appendChild(box);
  const name = document.createElement("td");
  name.className = "name";
  const link = document.createElement("a");
  link.href = "#customer=" + encodeURIComponent(c.uuid);
  link.textContent = c.name || c.email || c.uuid;
  name.appendChild(link);
  tr.append(pick, name, cell(c.email), cell(c.company), cell(c.country), statusCell, cell(c.owner),
    cell(day(c.lead_created_at)), cell(day(c.free_trial_started_at)), cell(day(c["customer-since"])), tags,
    cell(String(c.external_ids.length)));
  tr.addEventListener("click", (event) => {
    if (event.target.closest("a, input, button")) return;
    window.location.hash = "customer=" + c.uuid;
  });
  return tr;
}

// ---------------------------------------------------------------- bulk edit

// The rows ticked (across pages, by uuid) get one edit through POST /v1/customers/bulk_edits, the job of
// `funnelsync bulk-edit`: the customers a rule refuses are skipped, and listed here with the reason.
const selected = new Set();
const names = new Map();

function showSelection() {
  $("bulk").hidden = selected.size === 0;
  $("bulk-count").textContent = `${selected.size} selected`;
  const boxes = [...document.querySelectorAll("#customers input.pick")];
  $("select-page").checked = boxes.length > 0 && boxes.every((b) => b.checked);
}

async function applyBulkEdit(event) {
  event.preventDefault();
  $("bulk-error").textContent = "";
  const field = $("bulk-field").value;
  const refs = [...selected];
  try {
    const summary = await sendJSON("POST", "/v1/customers/bulk_edits",
      { customers: refs, set: { [field]: $("bulk-value").value } });
    const result = $("bulk-result");
    const head = document.createElement("p");
    head.textContent = `Applied to ${summary.applied}, skipped ${summary.skipped}.`;
    const list = document.createElement("ul");
    list.id = "bulk-skips";
    summary.skips.forEach((skip) => {
      const li = document.createElement("li");
      li.textContent = `${names.get(skip.customer) || skip.customer}: ${skip.reason}`;
      list.appendChild(li);
    });
    result.replaceChildren(head, ...(summary.skips.length ? [list] : []));
    selected.clear();
    loadMetrics();
    await loadCustomers();
    showSelection();
  } catch (error) {
    const problems = (error.body && error.body.errors) || [];
    $("bulk-error").textContent = problems.length ? problems.map((p) => p.reason).join("; ") : error.message;
  }
}

function tableParams() {
  return { where: table.where, q: $("q").value.trim(), status: $("status").value, data_source_uuid: $("source").value,
    sort: table.sort, order: table.order };
}

function queryString(params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (Array.isArray(value)) value.forEach((v) => query.append(key, v));
    else if (value !== undefined && value !== null && value !== "") query.append(key, value);
  }
  return query.toString();
}

async function loadCustomers(page) {
  const call = startCall("customers");
  showError("");
  if (page) table.page = page;
  try {
    const params = tableParams();
    const body = await getJSON("/dashboard/customers", { ...params, page: table.page, per_page: $("per-page").value });
    if (!isLatest("customers", call)) return;
    $("customers").tBodies[0].replaceChildren(...body.entries.map(customerRow));
    showSelection();
    table.pages = body.pages;
    if (table.page > body.pages) table.page = body.pages;
    const first = body.total ? (body.page - 1) * body.per_page + 1 : 0;
    $("count").textContent = `${first}–${first + body.entries.length - (body.total ? 1 : 0)} of ${body.total} customers` +
      ` (page ${body.page} of ${body.pages})`;
    $("prev").disabled = body.page <= 1;
    $("next").disabled = body.page >= body.pages;
    $("export").href = "/dashboard/customers.csv?" + queryString(params);
    $("table-segment").textContent = table.where.length ? "In the segment: " + table.where.join(" AND ") : "";
    document.querySelectorAll("#customers th[data-sort]").forEach((th) => {
      th.setAttribute("aria-sort", th.dataset.sort === table.sort ? (table.order === "asc" ? "ascending" : "descending")
        : "none");
    });
  } catch (error) {
    if (isLatest("customers", call)) showError(error.message);
  }
}

// Each sortable header holds a button (reachable by keyboard); a second press reverses the order.
function setupSorting() {
  document.querySelectorAll("#customers th[data-sort]").forEach((th) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "sort";
    b.textContent = th.textContent;
    th.replaceChildren(b);
    b.addEventListener("click", () => {
      if (table.sort === th.dataset.sort) table.order = table.order === "asc" ? "desc" : "asc";
      else { table.sort = th.dataset.sort; table.order = th.dataset.sort.endsWith("_at") || th.dataset.sort ===
        "subscriber_since" ? "desc" : "asc"; }
      writeViewToURL();
      loadCustomers(1);
    });
  });
}

async function showDetail() {
  const call = startCall("detail");
  const match = window.location.hash.match(/customer=([\w-]+)/);
  const panel = $("detail");
  if (!match) { panel.hidden = true; return; }
  try {
    const c = await getJSON("/v1/customers/" + match[1]);
    const dl = document.createElement("dl");
    const add = (k, v) => {
      const dt = document.createElement("dt"); dt.textContent = k;
      const dd = document.createElement("dd"); dd.textContent = v === null || v === undefined || v === "" ? "–" : v;
      dl.append(dt, dd);
    };
    const [history, edits, contacts] = await Promise.all([
      getJSON(`/dashboard/customers/${c.uuid}/history`), getJSON(`/v1/customers/${c.uuid}/edits`),
      getJSON(`/v1/customers/${c.uuid}/contacts`, { per_page: 100 })]);
    if (!isLatest("detail", call)) return;
    const edited = new Set(edits.edits.map((e) => e.field));
    const mark = (field, v) => (edited.has(field) ? `${v === null || v === undefined || v === "" ? "–" : v} (edited)` : v);
    add("uuid", c.uuid); add("Name", mark("name", c.name)); add("Email", mark("email", c.email));
    add("Company", mark("company", c.company)); add("Status", c.status);
    add("Lead status", mark("lead_status", c.lead_status));
    add("Owner", mark("owner", c.owner)); add("Country", mark("country", c.country));
    add("State", mark("state", c.state)); add("City", mark("city", c.city)); add("Zip", mark("zip", c.zip));
    add("Website", mark("website_url", c.website_url)); add("Created", c.created_at);
    add("Lead created", mark("lead_created_at", c.lead_created_at));
    add("Free trial started", mark("free_trial_started_at", c.free_trial_started_at));
    add("Customer since", c["customer-since"]); add("External ids", c.external_ids.join(", "));
    add("Tags", (c.attributes.tags || []).join(", "));
    Object.entries(c.attributes.custom || {}).forEach(([key, value]) => add(key, mark("custom." + key, String(value))));
    const title = document.createElement("h2");
    title.textContent = c.name || c.email || c.uuid;
    panel.replaceChildren(title, dl, editsSection(c, edits.edits), editForm(c), recordsSection(c, history),
      contactsSection(contacts.entries), mergeSection(c), historySection(c, history));
    panel.hidden = false;
    panel.scrollIntoView({ behavior: "smooth", block: "nearest" });
  } catch (error) {
    if (isLatest("detail", call)) showError(error.message);
  }
}

// ---------------------------------------------------------------- edits

const LEAD_STATUSES = ["New_Lead", "Working_Lead", "Qualified_Lead", "Unqualified_Lead"];

// The customer's editable fields; saving sends only what changed (PATCH /v1/customers/{uuid}: each
// becomes a manual edit no re-sync erases) and shows each refusal next to its field.
function editForm(c) {
  const form = document.createElement("form");
  form.id = "edit";
  form.noValidate = true;
  const heading = document.createElement("h3");
  heading.textContent = "Edit";
  form.appendChild(heading);
  const fields = [
    { name: "lead_created_at", label: "Lead created", type: "date", value: day(c.lead_created_at) },
    { name: "free_trial_started_at", label: "Free trial started", type: "date", value: day(c.free_trial_started_at) },
    { name: "owner", label: "Owner", type: "text", value: c.owner || "" },
    { name: "tags", label: "Tags (comma-separated)", type: "text", value: (c.attributes.tags || []).join(", ") },
  ];
  if (LEAD_STATUSES.includes(c.status)) {
    fields.splice(2, 0, { name: "status", label: "Lead status", type: "select", value: c.status });
  }
  // Every custom attribute the account knows (and the customer's own), typed: the API refuses a value
  // that does not fit the attribute's type, and its reason shows next to the field.
  const custom = c.attributes.custom || {};
  [...new Set([...Object.keys(attributeTypes), ...Object.keys(custom)])].sort().forEach((key) => {
    const value = custom[key];
    fields.push({ name: "custom." + key, id: "custom-" + key, label: `${key} (${attributeTypes[key] || "new"})`,
      type: "text", value: value === null || value === undefined ? "" : String(value) });
  });
  const inputs = {};
  fields.forEach((f) => {
    const label = document.createElement("label");
    label.textContent = f.label + " ";
    let input;
    if (f.type === "select") {
      input = document.createElement("select");
      LEAD_STATUSES.forEach((s) => { const o = document.createElement("option"); o.textContent = s; input.appendChild(o); });
    } else {
      input = document.createElement("input");
      input.type = f.type;
    }
    input.id = "edit-" + (f.id || f.name);
    input.name = f.name;
    input.value = f.value;
    const error = document.createElement("span");
    error.className = "field-error";
    error.id = input.id + "-error";
    input.setAttribute("aria-describedby", error.id);
    error.setAttribute("role", "alert");
    label.append(input, error);
    form.appendChild(label);
    inputs[f.name] = { input, error, initial: f.value };
  });
  const save = document.createElement("button");
  save.type = "submit";
  save.textContent = "Save";
  const done = document.createElement("span");
  done.id = "edit-status";
  done.setAttribute("role", "status");
  form.append(save, done);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    Object.values(inputs).forEach((f) => { f.error.textContent = ""; });
    const body = {};
    for (const [name, f] of Object.entries(inputs)) {
      if (f.input.value === f.initial) continue;
      if (name === "tags") {
        body.attributes = { ...body.attributes, tags: f.input.value.split(",").map((t) => t.trim()).filter(Boolean) };
      } else if (name.startsWith("custom.")) {
        // Sent as typed: the API reads "12" as a number for an Integer attribute and refuses "twelve".
        const attributes = body.attributes || {};
        attributes.custom = { ...(attributes.custom || {}), [name.slice(7)]: f.input.value === "" ? null : f.input.value };
        body.attributes = attributes;
      } else {
        body[name] = f.input.value === "" ? null : f.input.value;
      }
    }
    if (!Object.keys(body).length) { done.textContent = "Nothing changed."; return; }
    try {
      await sendJSON("PATCH", "/v1/customers/" + c.uuid, body);
      done.textContent = "Saved.";
      await showDetail();
      $("edit-status").textContent = "Saved.";
      loadMetrics();
      loadCustomers();
    } catch (error) {
      showProblems(error, inputs, done);
    }
  });
  return form;
}

// The input an API error names: "attributes.custom.seats" is the seats field, "attributes.tags[1]" the tags,
// "lead_status" the status; anything else by its first segment.
function inputOf(inputs, field) {
  const name = String(field || "");
  if (inputs[name]) return inputs[name];
  const custom = name.match(/^attributes\.custom\.(.+)$/);
  if (custom && inputs["custom." + custom[1]]) return inputs["custom." + custom[1]];
  if (name.startsWith("attributes.tags")) return inputs.tags;
  if (name === "lead_status") return inputs.status;
  return inputs[name.split(/[.[]/)[0]];
}

function showProblems(error, inputs, status) {
  const problems = (error.body && error.body.errors) || [];
  problems.forEach((p) => {
    const target = inputOf(inputs, p.field);
    if (target) target.error.textContent = p.reason; else status.textContent = `${p.field}: ${p.reason}`;
  });
  if (!problems.length) status.textContent = error.message;
}

// The customer's manual edits, each with "Revert to source value" (DELETE /v1/customers/{uuid}/edits/{field}:
// the override goes and what the sources say shows again).
function editsSection(c, edits) {
  const box = document.createElement("section");
  box.id = "manual-edits";
  box.appendChild(heading3("Manual edits"));
  if (!edits.length) { box.appendChild(document.createTextNode("None: every field shows what its sources say.")); return box; }
  const list = document.createElement("ul");
  edits.forEach((e) => {
    const li = document.createElement("li");
    li.dataset.field = e.field;
    const value = e.value === null || e.value === undefined ? "(empty)" : String(e.value);
    li.appendChild(document.createTextNode(`${e.field} = ${value} (by ${e.actor}, ${e.edited_at.slice(0, 10)}) `));
    li.appendChild(button("Revert to source value", async () => {
      try {
        await sendJSON("DELETE", `/v1/customers/${c.uuid}/edits/${encodeURIComponent(e.field)}`);
        await afterChange(c.uuid);
      } catch (error) { showError(error.message); }
    }, "quiet revert"));
    list.appendChild(li);
  });
  box.appendChild(list);
  return box;
}

// ---------------------------------------------------------------- add a lead

// POST /v1/customers into an API or custom data source, with the API's validation; each refusal shows
// next to its field, and the new lead opens in the detail.
function addLeadForm(sources) {
  const box = $("add-lead");
  const form = document.createElement("form");
  form.id = "add-lead-form";
  form.noValidate = true;
  const writable = sources.filter((s) => s.writable);
  if (!writable.length) {
    const p = document.createElement("p");
    p.textContent = "No API or custom data source to add a lead to: create one with POST /v1/data_sources.";
    box.replaceChildren(box.querySelector("summary"), p);
    return;
  }
  const fields = [
    { name: "data_source_uuid", label: "Data source", type: "select",
      options: writable.map((s) => ({ value: s.uuid, label: s.name })) },
    { name: "external_id", label: "External id", type: "text", value: "lead-" + Date.now().toString(36) },
    { name: "name", label: "Name", type: "text" }, { name: "email", label: "Email", type: "email" },
    { name: "company", label: "Company", type: "text" }, { name: "country", label: "Country", type: "text" },
    { name: "lead_created_at", label: "Lead created", type: "date", value: isoDay(new Date()) },
    { name: "free_trial_started_at", label: "Free trial started", type: "date" },
    { name: "status", label: "Lead status", type: "select", options: LEAD_STATUSES.map((v) => ({ value: v, label: v })) },
    { name: "owner", label: "Owner", type: "text" }, { name: "tags", label: "Tags (comma-separated)", type: "text" },
  ];
  const inputs = {};
  fields.forEach((f) => {
    const label = document.createElement("label");
    label.textContent = f.label + " ";
    let input;
    if (f.type === "select") {
      input = document.createElement("select");
      f.options.forEach((o) => {
        const option = document.createElement("option"); option.value = o.value; option.textContent = o.label;
        input.appendChild(option);
      });
    } else {
      input = document.createElement("input");
      input.type = f.type;
      input.value = f.value || "";
    }
    input.id = "add-" + f.name;
    const error = document.createElement("span");
    error.className = "field-error";
    error.id = input.id + "-error";
    error.setAttribute("role", "alert");
    input.setAttribute("aria-describedby", error.id);
    label.append(input, error);
    form.appendChild(label);
    inputs[f.name] = { input, error };
  });
  const save = document.createElement("button");
  save.type = "submit";
  save.textContent = "Add lead";
  const status = document.createElement("span");
  status.id = "add-status";
  status.setAttribute("role", "status");
  form.append(save, status);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    Object.values(inputs).forEach((f) => { f.error.textContent = ""; });
    status.textContent = "";
    const body = {};
    for (const [name, f] of Object.entries(inputs)) {
      const value = f.input.value.trim();
      if (!value) continue;
      if (name === "tags") body.attributes = { tags: value.split(",").map((t) => t.trim()).filter(Boolean) };
      else body[name] = value;
    }
    try {
      const made = await sendJSON("POST", "/v1/customers", body);
      status.textContent = "Added.";
      inputs.external_id.input.value = "lead-" + Date.now().toString(36);
      await afterChange(made.uuid);
    } catch (error) {
      showProblems(error, inputs, status);
    }
  });
  box.replaceChildren(box.querySelector("summary"), form);
}

// ---------------------------------------------------------------- merge and unmerge

function heading3(text) { const h = document.createElement("h3"); h.textContent = text; return h; }

function button(text, onClick, className) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  if (className) b.className = className;
  b.addEventListener("click", onClick);
  return b;
}

async function afterChange(uuid) {
  if (uuid) window.location.hash = "customer=" + uuid;
  await showDetail();
  loadMetrics();
  loadCustomers();
}

// The source records of the customer; with more than one, each can be separated again (unmerge).
function recordsSection(c, history) {
  const box = document.createElement("section");
  box.id = "records";
  box.appendChild(heading3("Source records"));
  const list = document.createElement("ul");
  history.records.forEach((r) => {
    const li = document.createElement("li");
    li.appendChild(document.createTextNode(`${r.data_source}: ${r.external_id} `));
    li.dataset.externalId = r.external_id;
    if (history.records.length > 1) {
      li.appendChild(button("Unmerge", async () => {
        try {
          await sendJSON("POST", "/v1/customers/unmerges",
            { customer_uuid: c.uuid, data_source_uuid: r.data_source_uuid, external_id: r.external_id });
          await afterChange(c.uuid);
        } catch (error) { showError(error.message); }
      }, "quiet unmerge"));
    }
    if (r.subscriptions.length) li.appendChild(subscriptionsTable(r.subscriptions));
    li.appendChild(valuesDetails("What the source reported", r.fields, "fields"));
    li.appendChild(r.raw === null || r.raw === undefined ? noRaw() : valuesDetails("Raw values", r.raw, "raw"));
    list.appendChild(li);
  });
  box.appendChild(list);
  return box;
}

// A value as text: strings as they are, anything else (numbers, lists, nested payloads) as JSON.
function valueText(v) {
  if (v === null || v === undefined || v === "") return "–";
  return typeof v === "string" ? v : JSON.stringify(v);
}

// Key-value pairs (a record's reported fields, its raw payload or file row) folded under a summary.
function valuesDetails(summary, values, className) {
  const box = document.createElement("details");
  box.className = className;
  const s = document.createElement("summary");
  s.textContent = summary;
  const dl = document.createElement("dl");
  Object.entries(values || {}).forEach(([k, v]) => {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = valueText(v);
    dl.append(dt, dd);
  });
  box.append(s, dl);
  return box;
}

function noRaw() {
  const p = document.createElement("p");
  p.className = "raw none";
  p.textContent = "No raw values stored for this record.";
  return p;
}

// The subscriptions a source record carries: what the status and the conversion dates follow from.
function subscriptionsTable(subs) {
  const table = document.createElement("table");
  table.className = "subscriptions";
  const caption = document.createElement("caption");
  caption.textContent = "Subscriptions";
  const head = document.createElement("tr");
  ["Subscription", "State", "Trial started", "Trial ended", "First paid", "Cancelled"].forEach((h) => {
    const th = document.createElement("th"); th.scope = "col"; th.textContent = h; head.appendChild(th);
  });
  const body = document.createElement("tbody");
  subs.forEach((sub) => {
    const tr = document.createElement("tr");
    [sub.external_id, sub.state, day(sub.trial_started_at), day(sub.trial_ended_at), day(sub.first_paid_at),
      day(sub.cancelled_at)].forEach((v) => {
      const td = document.createElement("td"); td.textContent = valueText(v); tr.appendChild(td);
    });
    body.appendChild(tr);
  });
  const thead = document.createElement("thead");
  thead.appendChild(head);
  table.append(caption, thead, body);
  return table;
}

// The customer's contacts (GET /v1/customers/{uuid}/contacts; `funnelsync contacts` edits them).
function contactsSection(contacts) {
  const box = document.createElement("section");
  box.id = "contacts";
  box.appendChild(heading3("Contacts"));
  if (!contacts.length) { box.appendChild(document.createTextNode("No contacts.")); return box; }
  const table = document.createElement("table");
  const head = document.createElement("tr");
  ["Name", "Title", "Email", "Phone", "Notes"].forEach((h) => {
    const th = document.createElement("th"); th.scope = "col"; th.textContent = h; head.appendChild(th);
  });
  const thead = document.createElement("thead");
  thead.appendChild(head);
  const body = document.createElement("tbody");
  contacts.forEach((p) => {
    const tr = document.createElement("tr");
    [[p.first_name, p.last_name].filter(Boolean).join(" "), p.title, p.email, p.phone, p.notes].forEach((v) => {
      const td = document.createElement("td"); td.textContent = valueText(v); tr.appendChild(td);
    });
    body.appendChild(tr);
  });
  table.append(thead, body);
  box.appendChild(table);
  return box;
}

// Merge another customer into this one: search it, see what this customer becomes, confirm.
function mergeSection(c) {
  const box = document.createElement("section");
  box.id = "merge";
  box.appendChild(heading3("Merge another customer into this one"));
  const input = document.createElement("input");
  input.type = "search";
  input.id = "merge-q";
  input.placeholder = "Name, email or company";
  input.setAttribute("aria-label", "Customer to merge into this one");
  const results = document.createElement("div");
  results.id = "merge-results";
  const find = button("Find", async () => {
    try {
      const page = await getJSON("/v1/customers", { q: input.value.trim(), per_page: 10 });
      const rows = page.entries.filter((o) => o.uuid !== c.uuid).map((o) => {
        const row = document.createElement("div");
        row.className = "merge-candidate";
        row.appendChild(document.createTextNode(`${o.name || o.email || o.uuid} (${o.email || "no email"}) `));
        row.appendChild(button("Merge into this customer", () => preview(o, row), "quiet"));
        return row;
      });
      results.replaceChildren(...(rows.length ? rows : [document.createTextNode("No other customer found.")]));
    } catch (error) { showError(error.message); }
  }, "quiet");
  const preview = (other, row) => {
    const dl = document.createElement("dl");
    dl.className = "merge-preview";
    const add = (k, mine, theirs) => {
      const dt = document.createElement("dt"); dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = (mine || theirs || "–") + (mine ? "" : theirs ? " (from the merged customer)" : "");
      dl.append(dt, dd);
    };
    add("Name", c.name, other.name); add("Email", c.email, other.email); add("Company", c.company, other.company);
    add("Lead created", day(c.lead_created_at), day(other.lead_created_at));
    add("Free trial started", day(c.free_trial_started_at), day(other.free_trial_started_at));
    const tags = [...new Set([...(c.attributes.tags || []), ...((other.attributes || {}).tags || [])])];
    add("Tags", tags.join(", "), "");
    const note = document.createElement("p");
    note.textContent = `${c.name || c.uuid} survives; ${other.name || other.uuid} is merged into it (undo: Unmerge).`;
    const confirm = button("Confirm merge", async () => {
      try {
        await sendJSON("POST", "/v1/customers/merges", { from: { customer_uuid: other.uuid }, into: { customer_uuid: c.uuid } });
        await afterChange(c.uuid);
      } catch (error) { showError(error.message); }
    });
    confirm.id = "merge-confirm";
    row.replaceChildren(note, dl, confirm);
  };
  box.append(input, find, results);
  return box;
}

// The merge log; a merge into this customer still in place can be undone from its line (the API's
// unmerge names one record the merge brought; the customer merged away comes back with all of them).
function historySection(c, history) {
  const box = document.createElement("section");
  box.id = "merge-history";
  box.appendChild(heading3("Merge history"));
  if (!history.merges.length) { box.appendChild(document.createTextNode("No merges.")); return box; }
  const list = document.createElement("ul");
  history.merges.forEach((m) => {
    const li = document.createElement("li");
    li.dataset.event = m.uuid;
    li.textContent = `${m.created_at.slice(0, 16).replace("T", " ")} ${m.kind}: ${m.from} → ${m.into}` +
      (m.rule ? ` (rule ${m.rule})` : "") + ` by ${m.actor}` + (m.undone_at ? ", undone" : "") + " ";
    if (m.unmerge) {
      li.appendChild(button("Unmerge", async () => {
        try {
          await sendJSON("POST", "/v1/customers/unmerges", { customer_uuid: c.uuid, ...m.unmerge });
          await afterChange(c.uuid);
        } catch (error) { showError(error.message); }
      }, "quiet unmerge"));
    }
    list.appendChild(li);
  });
  box.appendChild(list);
  return box;
}

// ---------------------------------------------------------------- the view in the URL

// The view lives in the query string (range, interval, within, segment controls, further conditions, and
// the table's search, filters, sort and page), so a view can be bookmarked or shared; the customer open in
// the detail stays in the #fragment.
const VIEW_FIELDS = {
  start: "start", end: "end", interval: "interval", within: "within", where: "where", source: "seg-source",
  country: "seg-country", status: "seg-status", owner: "seg-owner", tag: "seg-tag", attr: "seg-attr",
  op: "seg-attr-op", value: "seg-attr-value", q: "q", t_status: "status", t_source: "source", per_page: "per-page",
};

function readViewFromURL() {
  const query = new URLSearchParams(window.location.search);
  for (const [param, id] of Object.entries(VIEW_FIELDS)) {
    const value = query.get(param);
    if (value === null) continue;
    const element = $(id);
    if (element.tagName === "SELECT" && ![...element.options].some((o) => o.value === value)) {
      const o = document.createElement("option"); o.value = value; o.textContent = value; element.appendChild(o);
    }
    element.value = value;
  }
  if (query.get("sort")) table.sort = query.get("sort");
  if (query.get("order")) table.order = query.get("order");
  if (/^\d+$/.test(query.get("page") || "")) table.page = Number(query.get("page"));
}

function writeViewToURL() {
  const query = new URLSearchParams();
  for (const [param, id] of Object.entries(VIEW_FIELDS)) {
    const value = $(id).value;
    if (!value || (param === "op" && !$("seg-attr").value) || (param === "per_page" && value === "25")) continue;
    query.set(param, value);
  }
  if (table.sort !== "lead_created_at" || table.order !== "desc") { query.set("sort", table.sort); query.set("order", table.order); }
  if (table.page > 1) query.set("page", table.page);
  history.replaceState(null, "", window.location.pathname + "?" + query + window.location.hash);
}

async function copyCommand() {
  const text = $("cli-filter").textContent;
  try {
    await navigator.clipboard.writeText(text);
    $("cli-copy").textContent = "Copied";
  } catch (_) {
    // No clipboard permission: select the text so Ctrl+C copies it.
    const range = document.createRange();
    range.selectNodeContents($("cli-filter"));
    window.getSelection().removeAllRanges();
    window.getSelection().addRange(range);
    $("cli-copy").textContent = "Selected: press Ctrl+C";
  }
  setTimeout(() => { $("cli-copy").textContent = "Copy"; }, 2000);
}

// ---------------------------------------------------------------- start

async function init() {
  const today = new Date();
  const start = new Date(today.getFullYear(), today.getMonth() - 11, 1);
  $("start").value = isoDay(start);
  $("end").value = isoDay(today);
  readViewFromURL();
  setupSorting();
  ["chart-leads", "chart-trials", "chart-rate", "chart-cycle"].forEach((id) => attachTooltip($(id)));
  $("controls").addEventListener("submit", (event) => {
    event.preventDefault();
    table.where = segmentConditions();
    table.page = 1;
    writeViewToURL();
    loadMetrics();
    loadCustomers();
  });
  $("search").addEventListener("submit", (event) => { event.preventDefault(); writeViewToURL(); loadCustomers(1); });
  $("status").addEventListener("change", () => { writeViewToURL(); loadCustomers(1); });
  $("source").addEventListener("change", () => { writeViewToURL(); loadCustomers(1); });
  $("per-page").addEventListener("change", () => { writeViewToURL(); loadCustomers(1); });
  $("prev").addEventListener("click", () => { table.page -= 1; writeViewToURL(); loadCustomers(); });
  $("next").addEventListener("click", () => { table.page += 1; writeViewToURL(); loadCustomers(); });
  $("cli-copy").addEventListener("click", copyCommand);
  $("bulk").addEventListener("submit", applyBulkEdit);
  $("bulk-clear").addEventListener("click", () => {
    selected.clear();
    document.querySelectorAll("#customers input.pick").forEach((b) => { b.checked = false; });
    showSelection();
  });
  $("select-page").addEventListener("change", () => {
    document.querySelectorAll("#customers input.pick").forEach((b) => {
      b.checked = $("select-page").checked;
      if (b.checked) selected.add(b.value); else selected.delete(b.value);
    });
    showSelection();
  });
  window.addEventListener("hashchange", showDetail);
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => renderFunnel(lastSeries, lastInterval), 150);
  });
  try { await loadSegments(); } catch (error) { showError(error.message); }
  table.where = segmentConditions();
  loadMetrics();
  loadCustomers();
  showDetail();
}

document.addEventListener("DOMContentLoaded", init);
