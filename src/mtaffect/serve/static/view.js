// mtaffect web app, one result (#/view?id=<run>/<output>&t=&track=): the video or photo, its charts
// (uPlot), the circumplex, face boxes, values, summary and downloads. Uses app.js's helpers and state.
"use strict";

// ------------------------------------------------------------------ view
function closeView() {
  const v = S.view;
  if (!v) return;
  $("video").pause(); $("video").removeAttribute("src"); $("video").load();
  for (const c of v.charts) c.destroy();
  S.view = null;
}

async function openView(id, q) {
  closeView();
  const v = S.view = { id, meta: null, times: null, track: null, input: +(q.get("input") || 0), series: null,
    range: [null, null], charts: [], cursors: [], rows: new Map(), cache: null, loading: false, lastT: -1,
    imageRows: [] };
  try { v.meta = await api(`/api/meta?id=${encodeURIComponent(id)}`); } catch (err) { banner(err.message); return; }
  if (S.view !== v) return;
  const m = v.meta;
  $("title").textContent = m.kind === "images" ? `${id} (photos)` : m.inputs[0];
  $("status").textContent = m.complete ? (m.status || "") : "still running: showing the rows so far";
  v.track = m.tracks.includes(+q.get("track")) && q.get("track") !== null ? +q.get("track") : (m.tracks[0] ?? null);
  const t0 = parseFloat(q.get("t"));
  v.shareT = m.kind === "video" && isFinite(t0) ? Math.max(0, t0) : 0;
  // the URL's time (or one typed later, see revisit), until the video has landed on its frame
  v.wantT = m.kind === "video" && isFinite(t0) ? v.shareT : null;
  updateShare(v.shareT);  // every way in (list, job link, pasted URL, back/forward) fills the share link
  $("downloads").innerHTML = "Download: " + m.downloads.map((n) =>
    `<a href="/files/${id.split("/").map(encodeURIComponent).join("/")}/${n}" download>${n}</a>`).join("");
  const isImages = m.kind === "images";
  $("charts").hidden = isImages; $("controls").hidden = isImages; $("source-box").hidden = isImages;
  $("image-box").hidden = !isImages; $("video").hidden = isImages; $("still").hidden = !isImages;
  renderLegend();
  if (isImages) {
    $("image-pick").innerHTML = m.inputs.map((n, i) => `<option value="${i}">${esc(n)}</option>`).join("");
    $("image-pick").value = String(v.input);
    $("image-pick").onchange = () => { v.input = +$("image-pick").value; loadImage(); };
    loadImage();
    return;
  }
  const video = $("video");
  const useOriginal = m.playable[0] || !m.overlay;
  $("source").value = useOriginal ? "original" : "overlay";
  $("source").querySelector("[value=original]").disabled = !m.media[0];
  $("source").querySelector("[value=overlay]").disabled = !m.overlay;
  $("source").onchange = () => setSource($("source").value);
  video.onerror = () => {
    if ($("source").value === "original" && m.overlay) { banner("the browser cannot play the original; showing the overlay"); setSource("overlay"); }
    else banner("the browser cannot play this video");
  };
  setSource($("source").value);
  api(`/api/times?id=${encodeURIComponent(id)}`).then((buf) => {
    v.times = new Float64Array(buf);
    if (S.view === v) landOnWanted();
  });
  video.addEventListener("loadedmetadata", () => { if (S.view === v) landOnWanted(); }, { once: true });
  video.onpause = video.onseeked = () => updateShare();
  loadSummary();
  await loadSeries(null, null);
}

function setSource(which) {
  const v = S.view, video = $("video"), t = video.currentTime || 0;
  const src = which === "overlay" ? `/files/${v.id.split("/").map(encodeURIComponent).join("/")}/overlay.mp4`
    : `/api/media?id=${encodeURIComponent(v.id)}&input=0`;
  $("source").value = which;
  video.src = src;
  video.addEventListener("loadedmetadata", () => { if (t) video.currentTime = t; }, { once: true });
}

async function loadSeries(t0, t1) {
  const v = S.view;
  const width = Math.max(300, $("chart-va").clientWidth || 900);
  const qs = `id=${encodeURIComponent(v.id)}&points=${width}` + (t0 != null ? `&t0=${t0}&t1=${t1}` : "");
  let data;
  try { data = await api(`/api/series?${qs}`); } catch (err) { banner(err.message); return; }
  if (S.view !== v) return;
  v.series = data; v.range = [t0, t1];
  renderCharts();
}

function renderCharts() {
  const v = S.view;
  for (const c of v.charts) c.destroy();
  v.charts = []; v.cursors = [];
  if (!window.uPlot) {
    banner("Charts unavailable: the uPlot files are not installed. Run `make setup` (see docs/serve.md).");
    $("chart-expr").textContent = "charts unavailable (uPlot missing)";
    return;
  }
  const d = v.series, time = d.time, width = $("chart-va").clientWidth || 900;
  const tr = d.tracks[String(v.track)];
  const xs = v.range[0] != null ? { time: false, range: () => [v.range[0], v.range[1]] } : { time: false };
  const common = (height, yRange) => ({
    width, height, legend: { show: false },
    scales: { x: xs, y: { range: yRange } },
    axes: [{ values: (u, ticks) => ticks.map(fmtTime) }, {}],
    cursor: { drag: { x: true, y: false, setScale: false }, sync: { key: "mtaffect" }, points: { show: false } },
    hooks: { setSelect: [zoomFromSelect] },
  });
  // expressions: cumulative probabilities drawn from the top class down, each filled: a stacked area
  const cum = []; let acc = time.map(() => 0);
  for (let k = 0; k < 7; k++) {
    const p = tr ? tr.probs[k] : time.map(() => null);
    acc = acc.map((a, i) => (p[i] == null || a == null ? null : a + p[i]));
    cum.push(acc);
  }
  const exprOpts = common(190, [0, 1.14]);
  exprOpts.series = [{}, ...[6, 5, 4, 3, 2, 1, 0].map((k) => ({ label: EXPR[k], stroke: EXPR_COLOURS[k], fill: EXPR_COLOURS[k] + "cc", width: 0, points: { show: false } }))];
  exprOpts.hooks.draw = [drawBand];
  const exprData = [time, ...[6, 5, 4, 3, 2, 1, 0].map((k) => cum[k])];
  const vaOpts = common(190, [-1, 1]);
  vaOpts.series = [{}];
  const vaData = [time];
  for (const t of v.meta.tracks.slice(0, 10)) {
    const s = d.tracks[String(t)], w = t === v.track ? 2 : 1;
    vaOpts.series.push({ label: `valence ${t}`, stroke: colour(t), width: w, points: { show: false } });
    vaOpts.series.push({ label: `arousal ${t}`, stroke: colour(t), width: w, dash: [6, 4], points: { show: false } });
    vaData.push(s.valence, s.arousal);
  }
  $("chart-expr").innerHTML = ""; $("chart-va").innerHTML = "";
  v.charts.push(new uPlot(exprOpts, exprData, $("chart-expr")));
  v.charts.push(new uPlot(vaOpts, vaData, $("chart-va")));
  for (const u of v.charts) {
    const cur = document.createElement("div"); cur.className = "cursor"; u.over.appendChild(cur); v.cursors.push(cur);
    let down = null;
    u.over.addEventListener("mousedown", (e) => { down = e.clientX; });
    u.over.addEventListener("click", (e) => { if (down != null && Math.abs(e.clientX - down) > 3) return; seekTo(u.posToVal(e.offsetX, "x")); });
    u.over.addEventListener("dblclick", () => loadSeries(null, null));
  }
  if (window.mtaffect.firstChartMs == null) window.mtaffect.firstChartMs = performance.now();
  document.body.dataset.chart = "ready";
  v.lastT = -1;
}

function zoomFromSelect(u) {
  if (u.select.width < 4) return;
  const a = u.posToVal(u.select.left, "x"), b = u.posToVal(u.select.left + u.select.width, "x");
  u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
  loadSeries(a, b);
}

function drawBand(u) {
  // the predicted expression (argmax of each bucket's mean) as a colour band above the stack
  const v = S.view, tr = v && v.series.tracks[String(v.track)];
  if (!tr) return;
  const time = v.series.time, ctx = u.ctx, y0 = u.valToPos(1.13, "y", true), y1 = u.valToPos(1.04, "y", true);
  ctx.save();
  ctx.beginPath(); ctx.rect(u.bbox.left, u.bbox.top, u.bbox.width, u.bbox.height); ctx.clip();
  for (let i = 0; i < time.length; i++) {
    const e = tr.expression[i];
    if (e == null || time[i] == null) continue;
    const x0 = u.valToPos(time[i], "x", true), x1 = u.valToPos(time[i + 1] ?? time[i] + (time[i] - (time[i - 1] ?? time[i])), "x", true);
    ctx.fillStyle = EXPR_COLOURS[e];
    ctx.fillRect(x0, y0, Math.max(1, x1 - x0), y1 - y0);
  }
  ctx.restore();
}

function frameAt(t) {
  const times = S.view && S.view.times;
  if (!times || !times.length) return null;
  let lo = 0, hi = times.length - 1;
  if (t < times[0]) return 0;
  while (lo < hi) { const mid = (lo + hi + 1) >> 1; if (times[mid] <= t + 1e-6) lo = mid; else hi = mid - 1; }
  return lo;
}

function frameTarget(t) {
  // frame-accurate: the start of the frame that holds t (the table's own timestamps, so variable
  // frame rate is exact), a millisecond in, never past half the frame
  const times = S.view.times, k = frameAt(t);
  let target = t;
  if (k != null) {
    const next = k + 1 < times.length ? times[k + 1] : times[k] + 0.04;
    target = times[k] + Math.min(0.001, (next - times[k]) / 2);
  }
  return { frame: k, time: k != null ? times[k] : t, target: Math.max(0, target) };
}

function seekTo(t) {
  const { frame, time, target } = frameTarget(t);
  $("video").currentTime = target;
  S.view.wantT = null;
  window.mtaffect.lastSeek = { requested: t, frame, time, target };
  updateShare(target);
}

function landOnWanted() {
  // a shared or typed time: once the frame times and the video's metadata are both there (in
  // either order), seek to its frame; until then the share link shows it, on its frame once the
  // times are known (also when the video cannot play and the seek never comes)
  const v = S.view;
  if (!v || v.wantT == null) return;
  if (!v.times) updateShare(v.wantT);
  else if ($("video").readyState >= 1) seekTo(v.wantT);
  else updateShare(frameTarget(v.wantT).target);
}

function revisit(q) {
  // the same result with another time, person or photo typed into the address, or back/forward
  const v = S.view;
  if (!v || !v.meta) return;
  const t = parseFloat(q.get("t")), track = q.get("track") !== null ? +q.get("track") : null;
  if (v.meta.kind === "images") {
    const input = +(q.get("input") || 0);
    if (input !== v.input && input >= 0 && input < v.meta.inputs.length) {
      v.input = input; $("image-pick").value = String(input); loadImage();
    }
  } else if (isFinite(t)) {
    v.wantT = Math.max(0, t);  // the typed time wins, also over a seek still waiting for the times
    landOnWanted();
  }
  if (track != null && v.meta.tracks.includes(track)) select(track);
  updateShare();
}

function updateShare(t) {
  const v = S.view;
  if (!v || !v.meta) return;  // a pause event of the previous video may arrive before the new meta
  const video = $("video");
  // before the video has its metadata (or when it cannot play), currentTime says nothing; nor
  // does it while a wanted time waits for its seek
  const time = v.shareT = t ?? (video.readyState >= 1 && v.wantT == null ? video.currentTime : v.shareT);
  const hash = `#/view?id=${encodeURIComponent(v.id)}` + (v.meta.kind === "images" ? `&input=${v.input}` : `&t=${time.toFixed(3)}`) +
    (v.track != null ? `&track=${v.track}` : "");
  history.replaceState(null, "", hash);
  $("share").value = location.origin + location.pathname + hash;
}

function select(track) {
  const v = S.view;
  if (!v || track == null || track === v.track) return;
  v.track = track;
  renderLegend();
  if (v.meta.kind === "images") { drawImage(); } else { renderCharts(); v.lastT = -1; v.lastK = -1; }
  highlightSummary();
  updateShare();
}

function renderLegend() {
  const v = S.view, m = v.meta;
  const label = m.kind === "images" ? "face" : "person";
  const tracks = m.kind === "images" ? v.imageRows.map((r) => r.track) : m.tracks;
  $("legend").innerHTML = tracks.length ? tracks.map((t) => `<button data-track="${t}" class="${t === v.track ? "active" : ""}">
    <i style="background:${colour(t)}"></i>${label} ${t}</button>`).join("") : "<span class=msg>no face found</span>";
  $("legend").querySelectorAll("button").forEach((b) => b.addEventListener("click", () => select(+b.dataset.track)));
  $("legend").dataset.selected = v.track ?? "";
}

async function loadSummary() {
  const v = S.view;
  const extra = v.meta.kind === "images" ? `&input=${v.input}` : "";
  let people;
  try { people = (await api(`/api/summary?id=${encodeURIComponent(v.id)}${extra}`)).people; } catch (err) { banner(err.message); return; }
  const pm = (a, b) => (a == null ? "" : `${a.toFixed(2)} ± ${(b ?? 0).toFixed(2)}`);
  $("summary").innerHTML = `<thead><tr><th>person</th><th>frames</th><th>present</th>${EXPR.map((e) => `<th>${e}</th>`).join("")}
    <th>valence</th><th>arousal</th></tr></thead><tbody>` + people.map((p) => `<tr data-track="${p.track}">
    <td><i style="display:inline-block;width:10px;height:10px;background:${colour(p.track)}"></i> ${p.track}</td>
    <td class="num">${p.frames}</td><td class="num">${(100 * p.presence).toFixed(0)}%</td>
    ${p.share.map((s) => `<td class="num">${(100 * s).toFixed(0)}%</td>`).join("")}
    <td class="num">${pm(p.valence_mean, p.valence_sd)}</td><td class="num">${pm(p.arousal_mean, p.arousal_sd)}</td></tr>`).join("") + "</tbody>";
  $("summary").querySelectorAll("tbody tr").forEach((r) => r.addEventListener("click", () => select(+r.dataset.track)));
  highlightSummary();
}

function highlightSummary() {
  const v = S.view;
  $("summary").querySelectorAll("tbody tr").forEach((r) => { r.style.background = +r.dataset.track === v.track ? "#e6f0ff" : ""; });
}

// ------------------------------------------------------------------ photos
async function loadImage() {
  const v = S.view;
  $("still").src = `/api/media?id=${encodeURIComponent(v.id)}&input=${v.input}`;
  try { v.imageRows = (await api(`/api/image?id=${encodeURIComponent(v.id)}&input=${v.input}`)).rows; }
  catch (err) { banner(err.message); return; }
  if (!v.imageRows.some((r) => r.track === v.track)) v.track = v.imageRows.length ? v.imageRows[0].track : null;
  renderLegend(); loadSummary(); updateShare();
  if ($("still").complete) drawImage(); else $("still").onload = drawImage;
}

function drawImage() {
  const v = S.view, img = $("still");
  drawBoxes(v.imageRows, img.naturalWidth, img.naturalHeight);
  drawCircumplex(v.imageRows.map((r) => ({ ...r, age: 0 })));
  showValues(v.imageRows.find((r) => r.track === v.track));
}

// ------------------------------------------------------------------ per frame: boxes, circumplex, values
function contentRect(srcW, srcH) {
  const c = $("boxes"), cw = c.clientWidth, ch = c.clientHeight, s = Math.min(cw / srcW, ch / srcH);
  return { s, ox: (cw - srcW * s) / 2, oy: (ch - srcH * s) / 2 };
}

function drawBoxes(rows, srcW, srcH) {
  const c = $("boxes"), dpr = window.devicePixelRatio || 1, v = S.view;
  if (c.width !== Math.round(c.clientWidth * dpr)) { c.width = Math.round(c.clientWidth * dpr); c.height = Math.round(c.clientHeight * dpr); }
  const ctx = c.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0); ctx.clearRect(0, 0, c.width, c.height);
  if (!srcW || !srcH) return;
  const { s, ox, oy } = contentRect(srcW, srcH);
  c.onclick = (e) => {
    const x = (e.offsetX - ox) / s, y = (e.offsetY - oy) / s;
    const hit = rows.find((r) => r.box[0] <= x && x <= r.box[2] && r.box[1] <= y && y <= r.box[3]);
    if (hit) select(hit.track);
  };
  for (const r of rows) {
    const [x0, y0, x1, y1] = r.box;
    ctx.strokeStyle = colour(r.track); ctx.lineWidth = r.track === v.track ? 3 : 1.5;
    ctx.strokeRect(ox + x0 * s, oy + y0 * s, (x1 - x0) * s, (y1 - y0) * s);
    ctx.fillStyle = colour(r.track); ctx.font = "bold 13px system-ui";
    const best = r.probs.indexOf(Math.max(...r.probs));
    ctx.fillText(`${r.track} ${EXPR[best] || ""}`, ox + x0 * s + 3, oy + y0 * s - 4);
  }
}

function drawCircumplex(points) {
  const c = $("circumplex"), ctx = c.getContext("2d"), W = c.width, r = W / 2 - 24, cx = W / 2, cy = W / 2;
  ctx.clearRect(0, 0, W, W);
  ctx.strokeStyle = "#c5ccd3"; ctx.lineWidth = 1;
  ctx.beginPath(); ctx.arc(cx, cy, r, 0, 2 * Math.PI); ctx.moveTo(cx - r, cy); ctx.lineTo(cx + r, cy); ctx.moveTo(cx, cy - r); ctx.lineTo(cx, cy + r); ctx.stroke();
  ctx.fillStyle = "#52606d"; ctx.font = "12px system-ui";
  ctx.fillText("valence +", cx + r - 50, cy - 6); ctx.fillText("arousal +", cx + 6, cy - r + 12);
  ctx.fillText("-", cx - r + 2, cy - 6); ctx.fillText("-", cx + 6, cy + r - 4);
  for (const p of points) {
    if (p.valence == null || p.arousal == null) continue;
    const sel = p.track === S.view.track;
    ctx.globalAlpha = Math.max(0.05, 1 - p.age / 2) * (sel ? 1 : 0.5);
    ctx.fillStyle = colour(p.track);
    ctx.beginPath(); ctx.arc(cx + p.valence * r, cy - p.arousal * r, p.age === 0 ? (sel ? 7 : 5) : 2.5, 0, 2 * Math.PI); ctx.fill();
  }
  ctx.globalAlpha = 1;
}

function showValues(row) {
  if (!row) { $("values").innerHTML = "<span class=msg>no face for this person here</span>"; return; }
  $("values").innerHTML = row.probs.map((p, k) => `<div class="pbar"><span>${EXPR[k]}</span>
    <span><b style="width:${(100 * p).toFixed(1)}%;background:${EXPR_COLOURS[k]}"></b></span><span>${(100 * p).toFixed(1)}%</span></div>`).join("") +
    `<div>valence <b>${row.valence.toFixed(3)}</b> · arousal <b>${row.arousal.toFixed(3)}</b></div>`;
}

async function ensureRows(t) {
  // raw rows of a 20 s window around t: boxes, current values and the circumplex trail
  const v = S.view;
  if (v.loading || (v.cache && t >= v.cache[0] + 2 && t <= v.cache[1] - 2) || (v.cache && v.cache[0] <= 0 && t < v.cache[1] - 2 && t >= 0)) return;
  v.loading = true;
  const a = Math.max(0, t - 5), b = t + 15;
  try {
    const rows = (await api(`/api/frames?id=${encodeURIComponent(v.id)}&t0=${a}&t1=${b}`)).rows;
    if (S.view !== v) return;
    const map = new Map();
    for (const r of rows) { if (!map.has(r.frame)) map.set(r.frame, []); map.get(r.frame).push(r); }
    v.rows = map; v.list = rows; v.cache = [a, b]; v.lastT = -1;
  } finally { v.loading = false; }
}

function tick() {
  const v = S.view;
  if (!v || !v.meta || v.meta.kind !== "video") return;
  const video = $("video"), t = video.currentTime;
  $("play").textContent = video.paused ? "Play" : "Pause";
  if (t === v.lastT) return;
  v.lastT = t;
  ensureRows(t);
  const k = frameAt(t);
  $("clock").textContent = `${fmtTime(t)}${t < 60 ? " s" : ""}` + (k != null ? ` · frame ${k}` : "");
  for (let i = 0; i < v.charts.length; i++) {
    const u = v.charts[i], x = u.valToPos(t, "x"), cur = v.cursors[i];
    cur.style.display = x >= 0 && x <= u.over.clientWidth ? "" : "none";
    cur.style.left = `${x}px`;
  }
  if (k == null || !v.list || (k === v.lastK && v.list === v.drawnList)) return;  // drawn once per frame
  v.lastK = k; v.drawnList = v.list;
  const rows = v.rows.get(k) || [];
  drawBoxes(rows, video.videoWidth, video.videoHeight);
  const trail = v.list.filter((r) => r.track === v.track && r.time <= t + 1e-6 && r.time > t - 2).map((r) => ({ ...r, age: t - r.time }));
  drawCircumplex([...trail, ...rows.map((r) => ({ ...r, age: 0 }))]);
  showValues(rows.find((r) => r.track === v.track));
}

function loop() { window.mtaffect.rafCount++; tick(); requestAnimationFrame(loop); }

function setupPlayer() {
  const video = $("video");
  let resize = null;  // charts are drawn at the page's width: redraw them when it changes
  window.addEventListener("resize", () => {
    clearTimeout(resize);
    resize = setTimeout(() => { const v = S.view; if (v && v.series) { renderCharts(); v.lastK = -1; } }, 200);
  });
  $("play").addEventListener("click", () => (video.paused ? video.play() : video.pause()));
  const step = (d) => {
    const k = frameAt(video.currentTime), times = S.view.times;
    if (k == null) return;
    video.pause(); seekTo(times[Math.max(0, Math.min(times.length - 1, k + d))]);
  };
  $("prev").addEventListener("click", () => step(-1));
  $("next").addEventListener("click", () => step(1));
  $("rate").addEventListener("change", () => { video.playbackRate = +$("rate").value; });
  $("copy").addEventListener("click", () => { $("share").select(); navigator.clipboard && navigator.clipboard.writeText($("share").value); });
  document.addEventListener("keydown", (e) => {
    if (!S.view || S.view.meta?.kind !== "video" || e.target.tagName === "INPUT") return;
    if (e.key === " ") { e.preventDefault(); $("play").click(); }
    if (e.key === ",") step(-1);
    if (e.key === ".") step(1);
  });
}
