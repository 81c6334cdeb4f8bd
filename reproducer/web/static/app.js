// The results page. Plain JavaScript, no build step. Everything a result holds is put on
// the page as text (textContent), never as markup: a field holding <script> shows as text.
"use strict";

const PAGE = 100; // rows the page holds at a time; older ones are a request away
const $ = (id) => document.getElementById(id);

const state = {
  view: "results", // results | failures | trend | runs
  newest: true, // showing the newest page: new rows arrive live
  lastRowSeq: null, // the oldest row shown (for the next older page)
  seenSeq: 0, // the newest entry the page has asked for
  total: 0,
  selected: null,
  source: null,
  retry: null,
  trendTimer: null,
  counts: null,
  instance: null, // the server's: a new one (restarted) means starting over
  request: 0, // the newest page asked for: older answers are dropped
  more: false,
  opened: 0,
};

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined) continue;
    if (key === "className") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function listView() {
  return state.view === "results" || state.view === "failures";
}

function isoOf(local) {
  if (!local) return "";
  const when = new Date(local); // datetime-local: the browser's time zone
  return isNaN(when) ? "" : when.toISOString();
}

function filterParams() {
  const params = new URLSearchParams();
  const analysis = $("f-analysis").value;
  const path = $("f-path").value.trim();
  const status = state.view === "failures" ? "failed" : $("f-status").value;
  if (analysis) params.set("analysis", analysis);
  if (path) params.set("path", path);
  if (status) params.set("status", status);
  const since = isoOf($("f-since").value);
  const until = isoOf($("f-until").value);
  if (since) params.set("since", since);
  if (until) params.set("until", until);
  return params;
}

async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin" });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = { error: `${response.status} ${response.statusText}` };
  }
  if (!response.ok) throw new Error(body && body.error ? body.error : response.statusText);
  return body;
}

// ---------------------------------------------------------------- the table
const COLUMNS = {
  results: [
    ["produced_at", "Produced (UTC)"], ["file", "File"], ["analysis", "Analysis"],
    ["status", "Status"], ["seconds", "Seconds"], ["headline", "Result"], ["attachments", "Plots"],
  ],
  failures: [
    ["produced_at", "Reported (UTC)"], ["file", "File"], ["analysis", "Analysis"],
    ["kind", "Kind"], ["reason", "Reason"],
  ],
};

function cell(key, row) {
  const value = row[key];
  if (key === "status") return el("td", { className: `status-${value}` }, value);
  if (key === "file") return el("td", { className: "file" }, value || row.key || "");
  if (key === "produced_at") return el("td", {}, value ? value.replace("T", " ").slice(0, 23) : "");
  if (key === "seconds") return el("td", {}, typeof value === "number" ? value.toFixed(3) : "");
  if (key === "headline" && row.status === "failed") return el("td", { className: "error" }, row.reason || "");
  if (key === "headline") {
    const parts = Object.entries(value || {}).map(([k, v]) => `${k}: ${JSON.stringify(v)}`);
    return el("td", { className: "headline" }, parts.join("  "));
  }
  if (key === "attachments") return el("td", {}, value ? String(value) : "");
  if (key === "reason") {
    return el("td", { className: "error" }, value || "", row.detail ? el("div", { className: "detail" }, row.detail) : null);
  }
  return el("td", {}, value === null || value === undefined ? "" : value);
}

function rowNode(row, fresh) {
  const columns = COLUMNS[state.view === "failures" ? "failures" : "results"];
  const tr = el(
    "tr",
    {
      className: `row${fresh ? " fresh" : ""}${state.selected === row.seq ? " selected" : ""}`,
      dataset: { seq: String(row.seq), status: row.status, file: row.file || "", analysis: row.analysis || "" },
      onclick: () => openEntry(row.seq),
    },
    ...columns.map(([key]) => cell(key, row)),
  );
  return tr;
}

function renderHead() {
  const columns = COLUMNS[state.view === "failures" ? "failures" : "results"];
  $("entries-head").replaceChildren(...columns.map(([, label]) => el("th", {}, label)));
  $("f-status-label").hidden = state.view === "failures";
}

function renderRows(rows) {
  $("entries-body").replaceChildren(...rows.map((row) => rowNode(row, false)));
  state.lastRowSeq = rows.length ? rows[rows.length - 1].seq : null;
  updatePager(rows.length);
}

function prependRows(rows, matched) {
  const body = $("entries-body");
  for (const row of rows) body.prepend(rowNode(row, true));
  while (body.children.length > PAGE) {
    body.lastElementChild.remove();
    state.more = true;
  }
  const last = body.lastElementChild;
  state.lastRowSeq = last ? Number(last.dataset.seq) : null;
  state.total += matched;
  updatePager(body.children.length);
}

function updatePager(shown) {
  $("newest").disabled = state.newest;
  $("older").disabled = !state.more || state.lastRowSeq === null;
  const what = state.view === "failures" ? "failures" : "entries";
  $("page-note").textContent = state.newest
    ? `${shown} newest of ${state.total} matching ${what} held (live)`
    : `older page: ${shown} of ${state.total} matching ${what} held (not live)`;
  const note = $("list-note");
  const c = state.counts;
  const dropped = c ? (state.view === "failures" ? c.failures_dropped : c.results_dropped) : 0;
  note.textContent = dropped
    ? `${dropped} older ${state.view === "failures" ? "failures" : "results"} are no longer held by the page server; read them with: reproducer results`
    : "";
}

async function loadPage(before) {
  const params = filterParams();
  params.set("limit", String(PAGE));
  if (before !== null && before !== undefined) params.set("before", String(before));
  const asked = ++state.request;
  let page;
  try {
    page = await getJSON(`/api/entries?${params}`);
  } catch (error) {
    if (asked === state.request) $("list-note").textContent = `cannot load: ${error.message}`;
    return;
  }
  if (asked !== state.request) return; // a newer page was asked for meanwhile
  state.instance = page.instance;
  state.total = page.total;
  state.more = page.more;
  showCounts(page.counts);
  renderRows(page.rows);
  if (state.newest) connect(page.last_seq);
}

function restart() {
  state.newest = true;
  closeStream();
  $("entries-body").replaceChildren(); // the old view's rows go at once
  renderHead();
  loadPage(null);
}

// ---------------------------------------------------------------- live updates
function closeStream() {
  if (state.source) state.source.close();
  state.source = null;
  clearTimeout(state.retry);
}

function connect(after) {
  closeStream();
  state.seenSeq = after;
  const params = listView() && state.newest ? filterParams() : new URLSearchParams();
  params.set("after", String(after));
  const source = new EventSource(`/api/events?${params}`);
  state.source = source;
  source.addEventListener("open", () => setLive(true));
  source.addEventListener("entries", (event) => {
    const data = JSON.parse(event.data);
    showCounts(data.counts);
    const rows = data.rows;
    if (!rows.length) return;
    state.seenSeq = rows[rows.length - 1].seq;
    if (listView() && state.newest) prependRows(rows, data.matched);
    if (state.view === "trend" && rows.some((r) => r.analysis === $("t-analysis").value)) scheduleTrend();
  });
  source.addEventListener("state", (event) => {
    const data = JSON.parse(event.data);
    if (state.instance !== null && data.instance !== state.instance) {
      // the server restarted: its entries are numbered anew, so start over
      state.instance = data.instance;
      state.seenSeq = 0;
      if (listView()) restart();
      else connect(0);
      return;
    }
    state.instance = data.instance;
    showState(data);
  });
  source.addEventListener("error", () => {
    // reconnect from the newest entry seen (the browser's own retry would start over)
    setLive(false);
    source.close();
    state.retry = setTimeout(() => connect(state.seenSeq), 2000);
  });
}

function setLive(on) {
  const badge = $("live");
  badge.textContent = on ? "live" : "reconnecting";
  badge.className = `badge ${on ? "on" : "off"}`;
}

function showCounts(counts) {
  if (!counts) return;
  state.counts = counts;
  $("counts").textContent =
    `${counts.results_read} results and ${counts.failures_read} failures read` +
    (counts.results_dropped ? ` (newest ${counts.results_held} held)` : "");
  $("n-failures").textContent = String(counts.failures_read);
  for (const id of ["f-analysis", "t-analysis"]) fillAnalyses($(id), Object.keys(counts.analyses));
}

function fillAnalyses(select, names) {
  const have = new Set([...select.options].map((o) => o.value));
  for (const name of names) if (!have.has(name)) select.append(el("option", { value: name }, name));
}

// ---------------------------------------------------------------- one entry
async function openEntry(seq) {
  state.selected = seq;
  const asked = ++state.opened;
  for (const tr of $("entries-body").children) tr.classList.toggle("selected", Number(tr.dataset.seq) === seq);
  const panel = $("detail");
  panel.hidden = false;
  $("detail-title").textContent = "loading…";
  $("detail-attachments").replaceChildren();
  $("detail-json").textContent = "";
  let entry;
  try {
    entry = await getJSON(`/api/entries/${seq}`);
  } catch (error) {
    if (asked === state.opened) $("detail-title").textContent = error.message;
    return;
  }
  if (asked !== state.opened) return; // another entry was opened meanwhile
  const row = entry.row;
  $("detail-title").textContent = [row.file || row.key, row.analysis, row.status].filter(Boolean).join(" · ");
  $("detail-json").textContent = JSON.stringify(entry.record, null, 2);
  $("detail-attachments").replaceChildren(...entry.claims.map((claim, i) => attachmentNode(seq, i, claim)));
}

function attachmentNode(seq, i, claim) {
  const url = `/api/entries/${seq}/attachments/${i}`;
  const name = String(claim.path).split(/[\\/]/).pop();
  const caption = el("figcaption", {}, `${name} (${claim.size} bytes, SHA-256 checked by the server)`);
  if (!/\.(png|jpe?g|gif|webp)$/i.test(name)) {
    return el("figure", {}, el("a", { href: url, download: name }, `download ${name}`), caption);
  }
  const img = el("img", { className: "attachment", alt: name, src: url, loading: "lazy" });
  img.addEventListener("error", async () => {
    let why = "cannot be shown";
    try {
      await getJSON(url);
    } catch (error) {
      why = error.message;
    }
    img.replaceWith(el("p", { className: "error attachment-error" }, why));
  });
  return el("figure", {}, img, caption);
}

// ---------------------------------------------------------------- trend
async function loadFields() {
  const analysis = $("t-analysis").value;
  const select = $("t-field");
  const chosen = select.value;
  if (!analysis) return;
  try {
    const found = await getJSON(`/api/fields?${new URLSearchParams({ analysis })}`);
    select.replaceChildren(el("option", { value: "" }, "choose"), ...found.fields.map((f) => el("option", { value: f }, f)));
    if (found.fields.includes(chosen)) select.value = chosen;
  } catch (error) {
    $("trend-note").textContent = error.message;
  }
}

function drawTrend() {
  const analysis = $("t-analysis").value;
  const field = $("t-field").value;
  const img = $("trend-img");
  if (!analysis || !field) {
    img.hidden = true;
    return;
  }
  const params = new URLSearchParams({ analysis, field, x: $("t-x").value, n: String(state.seenSeq) });
  img.onerror = async () => {
    img.hidden = true;
    try {
      await getJSON(`/api/trend.png?${params}`);
    } catch (error) {
      $("trend-note").textContent = error.message;
    }
  };
  img.onload = () => {
    img.hidden = false;
    $("trend-note").textContent = `${field} of ${analysis}, redrawn as results arrive`;
  };
  img.src = `/api/trend.png?${params}`;
}

function scheduleTrend() {
  if (state.trendTimer) return; // at most one redraw every 1.5 s, however fast results come
  state.trendTimer = setTimeout(() => {
    state.trendTimer = null;
    drawTrend();
  }, 1500);
}

// ---------------------------------------------------------------- pipelines
function showState(data) {
  showCounts(data.window);
  const topics = Object.entries(data.topics || {}).map(([topic, how]) => el("li", {}, `${topic}: ${how}`));
  $("topics").replaceChildren(el("h2", {}, "Topics read"), el("ul", {}, ...topics));
  $("runs-note").textContent = data.runs_note || "";
  $("runs").replaceChildren(...(data.runs || []).map(runNode));
}

function runNode(run) {
  const d = run.driver || {};
  const ingest = run.ingest || {};
  const actors = (d.actors || []).map(([name, running, starting, pending, waiting]) =>
    `${name}: ${running} running` + (starting ? `, ${starting} starting` : "") +
    (pending ? `, ${pending} waiting for a node` : "") + (waiting ? `, ${waiting} files waiting` : ""));
  const facts = [
    `${d.n_results || 0} results, ${d.n_files_failed || 0} files failed, ${d.n_in_analysis || 0} in analysis`,
    `${ingest.n_partial_files || 0} files arriving, ${d.n_messages || ingest.n_messages || 0} messages read, ${d.commit_lag || 0} not committed yet`,
    ...actors,
  ];
  const partitions = run.partitions || [];
  const lagTable = el(
    "table",
    { className: "lag" },
    el("thead", {}, el("tr", {}, ...["partition", "committed", "end", "lag"].map((h) => el("th", {}, h)))),
    el("tbody", {}, ...partitions.map((p) =>
      el("tr", {}, el("td", {}, p.partition), el("td", {}, p.committed === null ? "-" : p.committed), el("td", {}, p.end), el("td", {}, p.lag)))),
  );
  const total = partitions.reduce((sum, p) => sum + p.lag, 0);
  return el(
    "div",
    { className: "run" },
    el("h2", {}, `${run.topic} · group ${run.group}`),
    el("p", { className: "note" }, `ingest actor ${run.actor} on node ${String(run.node || "").slice(0, 8)}`),
    el("ul", {}, ...facts.map((f) => el("li", {}, f))),
    el("p", {}, `lag: ${total} messages`),
    run.partitions_error ? el("p", { className: "error" }, run.partitions_error) : lagTable,
  );
}

// ---------------------------------------------------------------- views
function show(view) {
  state.view = view;
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.view === view);
  $("view-list").hidden = !listView();
  $("view-trend").hidden = view !== "trend";
  $("view-runs").hidden = view !== "runs";
  $("detail").hidden = true;
  state.selected = null;
  if (listView()) restart();
  else {
    connect(state.seenSeq);
    if (view === "trend") loadFields().then(drawTrend);
  }
}

function init() {
  for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => show(tab.dataset.view));
  let typing = null;
  $("filters").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(restart, 250);
  });
  $("filters").addEventListener("submit", (event) => event.preventDefault());
  $("filters").addEventListener("reset", () => setTimeout(restart, 0));
  $("older").addEventListener("click", () => {
    if (state.lastRowSeq === null) return;
    state.newest = false;
    closeStream();
    setLive(false);
    $("live").textContent = "paused";
    loadPage(state.lastRowSeq);
  });
  $("newest").addEventListener("click", restart);
  $("detail-close").addEventListener("click", () => {
    $("detail").hidden = true;
    state.selected = null;
  });
  $("t-analysis").addEventListener("change", () => loadFields().then(drawTrend));
  $("t-field").addEventListener("change", drawTrend);
  $("t-x").addEventListener("change", drawTrend);
  renderHead();
  loadPage(null);
}

document.addEventListener("DOMContentLoaded", init);
