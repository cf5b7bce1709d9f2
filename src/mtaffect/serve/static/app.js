// mtaffect web app: jobs and results list (#/); view.js shows one result beside its video
// (#/view?id=...). Charts: uPlot (vendored by `make setup`). Everything else is plain DOM and canvas.
"use strict";

const EXPR = ["Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise"];
const EXPR_COLOURS = ["#9aa5b1", "#d64545", "#7c5e10", "#8e44ad", "#f0b429", "#2f6fde", "#2bb0a0"];
const TRACK_COLOURS = ["#e8590c", "#1c7ed6", "#2b8a3e", "#c2255c", "#5f3dc4", "#0b7285", "#e67700",
  "#495057", "#a61e4d", "#087f5b"];
const $ = (id) => document.getElementById(id);
const S = { info: null, uploads: [], jobs: [], results: [], view: null };
// read by the browser tests and the benchmark
window.mtaffect = { state: S, lastSeek: null, firstChartMs: null, rafCount: 0 };

function colour(track) { return TRACK_COLOURS[((track % 10) + 10) % 10]; }
function esc(s) { return String(s ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`); }
function fmtTime(t) {
  if (t == null || !isFinite(t)) return "";
  const m = Math.floor(t / 60), s = t - 60 * m;
  return m ? `${m}:${s.toFixed(1).padStart(4, "0")}` : s.toFixed(2);
}
function banner(text) { const b = $("banner"); b.textContent = text || ""; b.hidden = !text; }

async function api(url, opts = {}) {
  // writes carry X-Mtaffect-Page: the server refuses a browser's write without it (a foreign page
  // cannot add it without a CORS preflight, which the server never grants; docs/serve.md)
  if (opts.method && opts.method !== "GET") opts = { ...opts, headers: { ...(opts.headers || {}), "x-mtaffect-page": "1" } };
  const r = await fetch(url, opts);
  const type = r.headers.get("content-type") || "";
  const body = type.includes("json") ? await r.json() : await r.arrayBuffer();
  if (!r.ok) throw new Error((body && body.error) || `${r.status} ${r.statusText}`);
  return body;
}

// ------------------------------------------------------------------ routing
function route() {
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const q = new URLSearchParams(query || "");
  if (path === "/view" && q.get("id") !== null) {
    $("home").hidden = true; $("view").hidden = false;
    if (!S.view || S.view.id !== q.get("id")) openView(q.get("id"), q); else revisit(q);
  } else {
    $("home").hidden = false; $("view").hidden = true;
    closeView();
    refreshResults();
  }
}

// ------------------------------------------------------------------ home: uploads, jobs, results
function setupHome() {
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); addFiles(e.dataTransfer.files); });
  $("files").addEventListener("change", (e) => { addFiles(e.target.files); e.target.value = ""; });
  $("start").addEventListener("click", startJob);
  let timer = null;
  $("search").addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(refreshResults, 200); });
}

async function addFiles(files) {
  for (const file of files) {
    const li = document.createElement("li");
    li.textContent = `${file.name}: uploading...`;
    $("uploads").appendChild(li);
    try {
      const r = await api(`/api/uploads?name=${encodeURIComponent(file.name)}`, { method: "POST", body: file });
      S.uploads.push(r.upload);
      li.className = "ok"; li.textContent = `${file.name}: ready (${r.kind}, ${(r.bytes / 1e6).toFixed(1)} MB)`;
      $("upload-msg").textContent = ""; $("upload-msg").className = "msg";
    } catch (err) {
      li.className = "bad"; li.textContent = err.message;
      $("upload-msg").textContent = `refused: ${err.message}`; $("upload-msg").className = "msg bad";
    }
    $("start").disabled = S.uploads.length === 0;
  }
}

async function startJob() {
  $("start").disabled = true;
  try {
    await api("/api/jobs", { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ uploads: S.uploads, checkpoint: $("checkpoint").value }) });
    S.uploads = []; $("uploads").innerHTML = "";
  } catch (err) {
    $("upload-msg").textContent = err.message; $("upload-msg").className = "msg bad";
  }
  pollJobs();
}

async function pollJobs() {
  if (!S.info || !S.info.jobs) return;
  const before = JSON.stringify(S.jobs.map((j) => j.status));
  try { S.jobs = (await api("/api/jobs")).jobs; } catch (err) { banner(err.message); return; }
  renderJobs();
  if (JSON.stringify(S.jobs.map((j) => j.status)) !== before || S.jobs.some((j) => j.status === "running")) refreshResults();
}

function renderJobs() {
  const body = $("jobs").tBodies[0];
  body.innerHTML = S.jobs.map((j) => {
    const pct = Math.round(100 * (j.status === "done" ? 1 : j.progress));
    const eta = j.eta_s != null ? `${Math.ceil(j.eta_s)} s` : "";
    const act = ["queued", "running"].includes(j.status)
      ? `<button data-act="cancel" data-job="${j.id}">Cancel</button>`
      : ["interrupted", "cancelled", "error"].includes(j.status)
        ? `<button data-act="resume" data-job="${j.id}">Resume</button>` : "";
    const first = S.results.find((r) => r.run === j.run);
    const open = first ? ` <a href="#/view?id=${encodeURIComponent(first.id)}">open</a>` : "";
    return `<tr data-job="${j.id}" data-status="${j.status}"><td>${esc(j.run)}</td><td>${esc(j.inputs.join(", "))}</td>
      <td class="status" title="${esc(j.message)}">${esc(j.status)}${j.phase ? ` (${esc(j.phase)})` : ""}
      ${j.message ? `<div class="msg ${j.status === "done" ? "" : "bad"}">${esc(j.message)}</div>` : ""}</td>
      <td><span class="bar"><span style="width:${pct}%"></span></span> ${pct}%</td><td>${eta}</td><td>${act}${open}</td></tr>`;
  }).join("");
  body.querySelectorAll("button[data-act]").forEach((b) => b.addEventListener("click", async () => {
    try { await api(`/api/jobs/${b.dataset.job}/${b.dataset.act}`, { method: "POST" }); } catch (err) { banner(err.message); }
    pollJobs();
  }));
}

async function refreshResults() {
  try { S.results = (await api(`/api/results?q=${encodeURIComponent($("search").value)}`)).results; }
  catch (err) { banner(err.message); return; }
  $("results").tBodies[0].innerHTML = S.results.map((r) => `<tr data-id="${esc(r.id)}">
    <td><a href="#/view?id=${encodeURIComponent(r.id)}">${esc(r.id)}</a></td><td>${esc(r.input)}</td>
    <td>${esc(r.status)}</td><td class="num">${r.frames ?? ""}</td><td class="num">${r.tracks ?? ""}</td>
    <td>${r.run ? `<button class="danger" data-run="${esc(r.run)}">Delete</button>` : ""}</td></tr>`).join("");
  $("results").querySelectorAll("button[data-run]").forEach((b) => b.addEventListener("click", async () => {
    if (!b.dataset.armed) {  // two clicks: no accidental deletion, no modal dialog
      b.dataset.armed = "1"; b.textContent = "Confirm delete";
      setTimeout(() => { delete b.dataset.armed; b.textContent = "Delete"; }, 4000);
      return;
    }
    try { await api(`/api/runs?run=${encodeURIComponent(b.dataset.run)}`, { method: "DELETE" }); }
    catch (err) { banner(err.message); }
    refreshResults();
  }));
  renderJobs();  // the jobs' "open" links point at these results
}

async function main() {
  setupHome(); setupPlayer();
  try { S.info = await api("/api/info"); } catch (err) { banner(err.message); return; }
  if (!S.info.charts || !window.uPlot) banner("Charts unavailable: the uPlot files are not installed. Run `make setup` (see docs/serve.md).");
  if (S.info.jobs) {
    $("run").hidden = false;
    $("checkpoint").innerHTML = S.info.checkpoints.map((c) => `<option${c === S.info.default_checkpoint ? " selected" : ""}>${esc(c)}</option>`).join("");
    setInterval(() => { if (!$("home").hidden) pollJobs(); }, 1000);
    pollJobs();
  }
  window.addEventListener("hashchange", route);
  route();
  requestAnimationFrame(loop);
}
document.addEventListener("DOMContentLoaded", main);  // after view.js has loaded too
