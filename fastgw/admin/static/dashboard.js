// The fastgw dashboard: polls /dashboard/data and renders it. Values are set with textContent only,
// never as HTML, so nothing from the config or the traffic can inject markup.
"use strict";

const POLL_MS = 2000;
let tokenRequired = true;

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function num(value, digits) {
  if (value === null || value === undefined) return "–";
  return Number(value).toFixed(digits);
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function sparkline(points) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  const width = 120, height = 22;
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("class", "spark");
  if (points.length > 1) {
    const top = Math.max(...points, 1e-9);
    const step = width / (points.length - 1);
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", points.map((p, i) =>
      `${(i * step).toFixed(1)},${(height - 2 - (p / top) * (height - 4)).toFixed(1)}`).join(" "));
    svg.appendChild(line);
  }
  return svg;
}

function fill(id, rows, cells) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren();
  if (!rows.length) {
    const tr = el("tr");
    const td = el("td", "none", "note");
    td.colSpan = document.querySelectorAll(`#${id} thead th`).length;
    tr.appendChild(td);
    body.appendChild(tr);
    return;
  }
  for (const row of rows) {
    const tr = el("tr");
    for (const cell of cells(row)) tr.appendChild(cell);
    body.appendChild(tr);
  }
}

function td(text, cls) { return el("td", text, cls); }

function token() { return document.getElementById("token").value.trim(); }

async function act(api, stage, op, body) {
  const headers = {"content-type": "application/json"};
  if (token()) headers.authorization = `Bearer ${token()}`;
  const result = document.getElementById("action-result");
  try {
    const response = await fetch(`/canary/${encodeURIComponent(api)}/${encodeURIComponent(stage)}/${op}`,
      {method: "POST", headers, body: JSON.stringify(body || {}), credentials: "omit"});
    const answer = await response.json().catch(() => ({}));
    result.textContent = response.ok ? `${op} ${api}/${stage}: done` :
      `${op} ${api}/${stage}: ${response.status} ${answer.message || ""}`;
    result.className = response.ok ? "note" : "note err";
  } catch (error) {
    result.textContent = `${op} ${api}/${stage}: ${error}`;
    result.className = "note err";
  }
  refresh();
}

function actions(stage) {
  const cell = td();
  if (tokenRequired && !token()) {
    cell.appendChild(el("span", "enter the admin token to act", "note"));
    return cell;
  }
  if (stage.canary) {
    const promote = el("button", "Promote");
    promote.addEventListener("click", () => act(stage.api, stage.stage, "promote"));
    const rollback = el("button", "Roll back");
    rollback.addEventListener("click", () => act(stage.api, stage.stage, "rollback"));
    cell.append(promote, rollback);
  }
  const percent = el("input");
  percent.type = "number"; percent.min = "0"; percent.max = "100"; percent.step = "0.1";
  percent.style.width = "5em";
  percent.value = stage.canary ? stage.canary.percentTraffic : "";
  const set = el("button", "Set %");
  set.addEventListener("click", () =>
    act(stage.api, stage.stage, "set", {percentTraffic: Number(percent.value)}));
  cell.append(percent, set);
  return cell;
}

function render(data) {
  tokenRequired = data.tokenRequired;
  const status = document.getElementById("status");
  status.textContent = data.ready ? "ready" : data.status;
  status.className = `pill ${data.ready ? "ok" : "bad"}`;
  document.getElementById("version").textContent = `v${data.version}`;
  document.getElementById("generation").textContent = `config generation ${data.generation}`;
  document.getElementById("window").textContent =
    `(rates and latency over the last ${data.windowSeconds} s; sampled every ${data.sampleSeconds} s)`;

  fill("traffic", data.traffic, (r) => [
    td(r.api), td(r.stage), td(r.route),
    td(num(r.rate, 1), "num rate"), td(num(r.rate4xx, 1), "num"), td(num(r.rate5xx, 1), r.rate5xx ? "num err" : "num"),
    td(num(r.p50, 2), "num"), td(num(r.p99, 2), "num"), td(r.requests, "num"),
    (() => { const c = td(); c.appendChild(sparkline(r.history)); return c; })(),
  ]);
  fill("stages", data.stages, (s) => [
    td(s.api), td(s.stage), td(s.deployment),
    td(s.canary ? s.canary.deployment : "–"),
    td(s.canary ? `${s.canary.percentTraffic}%` : "–", "num canary-percent"),
    actions(s),
  ]);
  fill("routes", data.routes, (r) => [
    td(r.api), td(r.stage), td(r.prefix), td(r.route), td(r.integration, "wrap"), td(r.authorizer),
  ]);
  fill("usage", data.usage, (u) => [
    td(u.keyId), td(u.name), td(u.enabled ? "yes" : "no"), td(u.plan || "–"),
    td(u.today === null ? "–" : u.today, "num usage-today"),
    td(u.remaining === null ? "–" : u.remaining, "num"),
    td(u.limit === null ? "–" : `${u.limit} / ${u.period}`, "num"),
  ]);
  fill("cache", data.cache, (c) => [
    td(c.api), td(c.stage), td(c.hitRatio === null ? "–" : `${(c.hitRatio * 100).toFixed(1)}%`, "num"),
    td(c.hits, "num"), td(c.misses, "num"), td(c.entries, "num"), td(bytes(c.bytes), "num"),
    td(bytes(c.capacity), "num"),
  ]);
  document.getElementById("targets-section").hidden = !data.targets.length;
  fill("targets", data.targets, (t) => [
    td(t.group), td(t.target), td(t.available ? "up" : "out", t.available ? "target-state" : "target-state err"),
    td(t.requests, "num"), td(t.failures, "num"), td(t.ejections, "num"),
  ]);
  document.getElementById("websocket-section").hidden = !data.websocket.length;
  fill("websocket", data.websocket, (w) => [td(w.api), td(w.stage), td(w.connections, "num")]);
}

async function refresh() {
  try {
    const response = await fetch("/dashboard/data", {credentials: "omit", cache: "no-store"});
    render(await response.json());
  } catch (error) {
    const status = document.getElementById("status");
    status.textContent = "unreachable";
    status.className = "pill bad";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const input = document.getElementById("token");
  input.value = sessionStorage.getItem("fastgw-admin-token") || "";
  input.addEventListener("change", () => { sessionStorage.setItem("fastgw-admin-token", token()); refresh(); });
  refresh();
  setInterval(refresh, POLL_MS);
});
