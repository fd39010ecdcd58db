// Ferry's dashboard: polls the admin API every two seconds with the operator's token and
// redraws. No framework, no build step; every number on screen comes from one API answer.
"use strict";

const PHASES = ["legacy", "dual_write", "shadow", "target_primary", "target_only", "complete"];
const COLORS = { legacy: "#9aa5b1", dual_write: "#4e79a7", shadow: "#76b7b2", target_primary: "#f28e2b", target_only: "#59a14f", complete: "#2f6b2a" };
const PATH_COLORS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#9c755f"];
const POLL_MS = 2000;

let token = null;
let selectedMigration = null;
let lastStatus = null;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else if (k === "onclick") e.addEventListener("click", v);
    else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function fmt(n) { return Number(n).toLocaleString("en-US"); }
function time(s) { return new Date(s).toISOString().replace("T", " ").slice(0, 19); }
function age(s) {
  if (!s) return "–";
  const secs = Math.max(0, (Date.now() - new Date(s).getTime()) / 1000);
  return secs < 90 ? `${secs.toFixed(0)} s` : secs < 5400 ? `${(secs / 60).toFixed(0)} min` : `${(secs / 3600).toFixed(1)} h`;
}

async function api(path, options) {
  const response = await fetch(path, {
    ...(options || {}),
    headers: { "Authorization": `Bearer ${token}`, "Content-Type": "application/json" },
  });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) { signOut(body.error ? body.error.message : "unauthorized"); throw new Error("unauthorized"); }
  if (!response.ok) throw new Error(body.error ? `${body.error.code}: ${body.error.message}` : `HTTP ${response.status}`);
  return body;
}

function signOut(why) {
  sessionStorage.removeItem("ferry-token");
  token = null;
  document.getElementById("main").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = why || "";
}

function renderMigrations(status) {
  const root = document.getElementById("migrations");
  root.replaceChildren();
  if (status.migrations.length === 0) root.append(el("p", { class: "muted" }, "No migrations yet."));
  for (const m of status.migrations) {
    const bar = el("div", { class: "phasebar", "data-testid": "phase-bar" });
    const legend = el("div", { class: "phases" });
    for (const p of m.phases) {
      if (p.tenants > 0) bar.append(el("div", { class: `phase-${p.phase}`, title: `${p.phase}: ${p.tenants}` }));
      if (p.tenants > 0) bar.lastChild.style.width = `${(100 * p.tenants) / Math.max(1, m.tenants)}%`;
      legend.append(el("span", {}, el("i", { class: `phase-${p.phase}` }), `${p.phase} `,
        el("b", { "data-testid": "phase-count", "data-migration": m.migration, "data-phase": p.phase }, fmt(p.tenants))));
    }
    const tile = (label, value, testid, warn) =>
      el("div", { class: warn ? "tile warn" : "tile" }, label, el("b", { "data-testid": testid, "data-migration": m.migration }, value));
    const throttled = m.copies.throttled.map(t => `${t.cause} (${t.tenants})`).join(", ") || "none";
    const tiles = el("div", { class: "tiles" },
      tile("tenants", fmt(m.tenants), "tenants"),
      tile("paused", fmt(m.paused), "paused", m.paused > 0),
      tile("buffer pending", fmt(m.buffer.pending), "buffer-pending"),
      tile("buffer dead", fmt(m.buffer.dead), "buffer-dead", m.buffer.dead > 0),
      tile("buffer retrying", fmt(m.buffer.retrying), "buffer-retrying"),
      tile("oldest pending", age(m.buffer.oldest_pending_at), "buffer-oldest"),
      tile("open mismatches", fmt(m.mismatches.open), "mismatches-open", m.mismatches.open > 0),
      tile("routed operations", fmt(m.routed), "routed"),
      tile("fallbacks", fmt(m.fallbacks), "fallbacks", m.fallbacks > 0),
      tile("copies running", fmt(m.copies.running), "copies-running"),
      tile("rows copied", `${fmt(m.copies.rows_done)} / ${fmt(m.copies.rows_total)}`, "rows-copied"),
      tile("copy rate", `${fmt(Math.round(m.copies.rows_per_s))} rows/s`, "copy-rate"),
      tile("throttled by", throttled, "throttled", m.copies.throttled.length > 0));
    root.append(el("div", { class: "migration", "data-testid": "migration", "data-migration": m.migration },
      el("h2", {}, m.migration, " ", el("span", {}, m.kind)), bar, legend, tiles));
  }
  const select = document.getElementById("tenant-migration");
  const ids = status.migrations.map(m => m.migration);
  if (select.options.length !== ids.length || ids.some((id, i) => select.options[i].value !== id)) {
    select.replaceChildren(...ids.map(id => el("option", { value: id }, id)));
  }
  if (!selectedMigration || !ids.includes(selectedMigration)) selectedMigration = ids[0] || null;
  if (selectedMigration) select.value = selectedMigration;
}

function drawChart(canvas, series, options) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 28;
  ctx.clearRect(0, 0, w, h);
  const points = series.flatMap(s => s.points);
  if (points.length === 0) { ctx.fillStyle = "#6b7380"; ctx.fillText("collecting samples…", pad, h / 2); return; }
  const t0 = Math.min(...points.map(p => p.t)), t1 = Math.max(...points.map(p => p.t), t0 + 1);
  const ymax = Math.max(1, ...points.map(p => p.v));
  ctx.strokeStyle = "#e3e6ea"; ctx.fillStyle = "#6b7380"; ctx.font = "10px system-ui";
  for (let i = 0; i <= 2; i++) {
    const y = h - pad / 2 - ((h - pad) * i) / 2;
    ctx.beginPath(); ctx.moveTo(pad, y); ctx.lineTo(w - 4, y); ctx.stroke();
    const tick = (ymax * i) / 2;
    ctx.fillText(ymax < 10 ? tick.toFixed(1) : fmt(Math.round(tick)), 2, y - 2);
  }
  ctx.fillText(`last ${Math.round((t1 - t0) / 60000 * 10) / 10} min`, w - 70, h - 2);
  for (const s of series) {
    ctx.strokeStyle = s.color; ctx.lineWidth = 1.6; ctx.beginPath();
    s.points.forEach((p, i) => {
      const x = pad + ((w - pad - 4) * (p.t - t0)) / (t1 - t0);
      const y = h - pad / 2 - ((h - pad) * p.v) / ymax;
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
  if (options && options.legend) {
    options.legend.replaceChildren(...series.map(s => el("span", {}, "■ ", s.name)));
    [...options.legend.children].forEach((c, i) => { c.style.color = series[i].color; });
  }
}

/// Rates from cumulative samples: (v[i] - v[i-1]) / dt, clamped at 0 (a router restart resets its counts).
function rate(samples, pick) {
  const out = [];
  for (let i = 1; i < samples.length; i++) {
    const dt = (new Date(samples[i].at) - new Date(samples[i - 1].at)) / 1000;
    if (dt <= 0) continue;
    out.push({ t: new Date(samples[i].at).getTime(), v: Math.max(0, (pick(samples[i]) - pick(samples[i - 1])) / dt) });
  }
  return out;
}

function renderCharts(samples) {
  const mine = samples.map(s => ({ at: s.at, m: s.migrations.find(m => m.migration === selectedMigration) })).filter(s => s.m);
  const paths = [...new Set(mine.flatMap(s => Object.keys(s.m.routed)))].sort();
  drawChart(document.getElementById("chart-ops"),
    paths.map((path, i) => ({ name: path, color: PATH_COLORS[i % PATH_COLORS.length], points: rate(mine, s => s.m.routed[path] || 0) })),
    { legend: document.getElementById("legend-ops") });
  drawChart(document.getElementById("chart-rows"), [{ name: "rows/s", color: "#4e79a7", points: rate(mine, s => s.m.rows_copied) }]);
  const level = key => mine.map(s => ({ t: new Date(s.at).getTime(), v: s.m[key] }));
  drawChart(document.getElementById("chart-buffer"), [
    { name: "pending", color: "#4e79a7", points: level("buffer_pending") },
    { name: "dead", color: "#e15759", points: level("buffer_dead") },
  ]);
}

function confirmAction(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-reason").value = "";
  return new Promise(resolve => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok" ? document.getElementById("confirm-reason").value : null), { once: true });
    dialog.showModal();
  });
}

async function act(migration, tenant, action) {
  const reason = await confirmAction(`${action} tenant ${tenant} of ${migration}? Guards still apply; the change is audited under your token's name.`);
  if (reason === null) return;
  try {
    const view = await api(`/api/v1/migrations/${encodeURIComponent(migration)}/tenants/${encodeURIComponent(tenant)}/${action}`,
      { method: "POST", body: JSON.stringify({ reason }) });
    const moved = view.moved[0];
    document.getElementById("error").textContent = moved ? `${tenant}: ${moved.from} -> ${moved.to}` : "";
  } catch (e) {
    document.getElementById("error").textContent = e.message;
  }
  refresh();
}

async function renderTenants() {
  const body = document.querySelector("#tenants tbody");
  if (!selectedMigration) { body.replaceChildren(); return; }
  const phase = document.getElementById("tenant-phase").value;
  const q = new URLSearchParams({ limit: "200" });
  if (phase) q.set("phase", phase);
  const tenants = await api(`/api/v1/migrations/${encodeURIComponent(selectedMigration)}/tenants?${q}`);
  document.getElementById("tenant-count").textContent = tenants.length === 200 ? "first 200 shown" : `${tenants.length} shown`;
  body.replaceChildren(...tenants.map(t => el("tr", { "data-testid": "tenant-row", "data-phase": t.phase },
    el("td", {}, t.tenant), el("td", {}, t.phase), el("td", {}, t.paused ? "paused" : ""),
    el("td", { class: "num" }, fmt(t.rows)), el("td", {}, time(t.updated_at)),
    el("td", {}, ...["advance", "rollback", t.paused ? "resume" : "pause"].map(a =>
      el("button", { onclick: () => act(selectedMigration, t.tenant, a) }, a))))));
}

async function renderLogs() {
  if (selectedMigration) {
    const audit = await api(`/api/v1/migrations/${encodeURIComponent(selectedMigration)}/audit?limit=15`);
    document.querySelector("#audit tbody").replaceChildren(...audit.reverse().map(a => el("tr", {},
      el("td", {}, time(a.at)), el("td", {}, a.tenant), el("td", {}, `${a.from_phase} → ${a.to_phase}${a.to_paused ? " (paused)" : ""}`),
      el("td", {}, a.actor), el("td", {}, a.forced_guards.length ? `FORCED ${a.forced_guards.join(",")}: ${a.reason}` : a.reason))));
  }
  const ops = await api("/api/v1/operations?limit=15");
  document.querySelector("#operations tbody").replaceChildren(...ops.reverse().map(o => el("tr", {},
    el("td", {}, time(o.at)), el("td", {}, o.actor), el("td", {}, o.operation), el("td", {}, o.target), el("td", {}, o.outcome))));
}

let refreshing = false;

async function refresh() {
  // A slow answer must not pile up polls behind it.
  if (!token || refreshing) return;
  refreshing = true;
  try {
    const status = await api("/api/v1/status");
    lastStatus = status;
    document.getElementById("store").textContent = status.store;
    document.getElementById("change-version").textContent = status.change_version;
    document.getElementById("routers-live").textContent = `${status.routers.filter(r => r.live).length} of ${status.routers.length}`;
    renderMigrations(status);
    renderCharts(await api("/api/v1/rates"));
    await renderTenants();
    await renderLogs();
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.getElementById("updated").setAttribute("data-version", String(status.change_version));
    if (!document.getElementById("error").textContent.includes("->")) document.getElementById("error").textContent = "";
  } catch (e) {
    if (token) document.getElementById("error").textContent = `refresh failed: ${e.message}`;
  } finally {
    refreshing = false;
  }
}

function start(t) {
  token = t;
  sessionStorage.setItem("ferry-token", t);
  document.getElementById("login").hidden = true;
  document.getElementById("main").hidden = false;
  refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  const phaseSelect = document.getElementById("tenant-phase");
  for (const p of PHASES) phaseSelect.append(el("option", { value: p }, p));
  phaseSelect.addEventListener("change", () => renderTenants().catch(() => {}));
  document.getElementById("tenant-migration").addEventListener("change", e => { selectedMigration = e.target.value; refresh(); });
  document.getElementById("login-form").addEventListener("submit", e => {
    e.preventDefault();
    start(document.getElementById("token-input").value.trim());
  });
  const fromFragment = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromFragment) history.replaceState(null, "", location.pathname);
  const t = fromFragment || sessionStorage.getItem("ferry-token");
  if (t) start(t); else signOut("");
  setInterval(refresh, POLL_MS);
});
