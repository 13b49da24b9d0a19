// msa-agent inspector: plain DOM over the HTTP API (/v1). Text from memories is only ever
// set with textContent, never parsed as HTML.
"use strict";

const API = "/v1";
const PAGE = 20;
const KEY = "msa-api-key";
const state = { namespace: null, offset: 0, listing: 0, searching: 0 };
const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------ plumbing
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("data-") || name === "title" || name === "type") node.setAttribute(name, value);
    else node[name] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

async function api(path, options = {}) {
  const headers = { "Content-Type": "application/json" };
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch(API + path, { ...options, headers });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const detail = body && body.detail !== undefined ? body.detail : response.statusText;
    throw new Error(`${response.status} ${body && body.error ? body.error : ""}: ${
      typeof detail === "string" ? detail : JSON.stringify(detail)}`);
  }
  return body;
}

function showError(err) {
  const box = $("error");
  box.textContent = err ? String(err.message || err) : "";
  box.hidden = !err;
}

function toast(message) {
  const box = $("toast");
  box.textContent = message;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 3000);
}

const nsQuery = () => `namespace=${encodeURIComponent(state.namespace)}`;
const short = (id) => id.slice(0, 8);

// ------------------------------------------------------------------ namespaces and list
async function loadHealth() {
  const h = await api("/health");
  $("health").textContent = `model ${h.model}` +
    (h.memories === undefined || h.memories === null ? "" : ` · ${h.memories} memories`);
}

async function loadNamespaces() {
  const names = await api("/namespaces");
  if (!names.includes(state.namespace)) state.namespace = names[0] || "default";
  const list = $("namespaces");
  list.replaceChildren(...names.map((name) => {
    const button = el("button", { type: "button", textContent: name, "data-namespace": name,
      class: name === state.namespace ? "current" : "" });
    button.addEventListener("click", () => pickNamespace(name));
    return el("li", {}, button);
  }));
}

function pickNamespace(name) {
  state.namespace = name;
  state.offset = 0;
  state.searching += 1;
  $("hits").replaceChildren();
  $("legend").hidden = true;
  for (const b of document.querySelectorAll("#namespaces button")) {
    b.classList.toggle("current", b.dataset.namespace === name);
  }
  loadMemories().catch(showError);
}

async function loadMemories() {
  const asked = ++state.listing;
  const rows = await api(`/memories?${nsQuery()}&limit=${PAGE}&offset=${state.offset}&newest_first=true`);
  if (asked !== state.listing) return; // a later page or namespace was asked for meanwhile
  $("memories").tBodies[0].replaceChildren(...rows.map(memoryRow));
  $("list-range").textContent = rows.length
    ? `${state.namespace}: ${state.offset + 1}–${state.offset + rows.length}`
    : `${state.namespace}: none${state.offset ? " on this page" : ""}`;
  $("prev").disabled = state.offset === 0;
  $("next").disabled = rows.length < PAGE;
}

function memoryRow(m) {
  const text = el("details", {}, el("summary", { textContent: preview(m.text, 90) }),
    el("pre", { class: "full", textContent: m.text }),
    el("pre", { class: "meta", textContent: JSON.stringify(m.metadata, null, 1) }));
  const forget = el("button", { type: "button", class: "danger", textContent: "Forget" });
  forget.addEventListener("click", () => confirmForget(m.id, m.text));
  return el("tr", { "data-id": m.id },
    el("td", {}, el("code", { title: m.id, textContent: short(m.id) })),
    el("td", { textContent: m.kind }),
    el("td", { textContent: new Date(m.created_at).toLocaleString() }),
    el("td", { textContent: String(m.n_tokens) }),
    el("td", {}, text), el("td", {}, forget));
}

function preview(text, n) {
  const flat = text.replace(/\s+/g, " ").trim();
  return flat.length <= n ? flat : `${flat.slice(0, n - 1)}…`;
}

// ------------------------------------------------------------------ recall
async function search(event) {
  event.preventDefault();
  const body = { query: $("query").value, k: Number($("k").value), namespace: state.namespace,
    explain: true };
  if ($("routing").value) body.routing = $("routing").value;
  const asked = ++state.searching;
  const { hits } = await api("/recall", { method: "POST", body: JSON.stringify(body) });
  if (asked !== state.searching) return; // another search or namespace meanwhile
  const range = scoreRange(hits);
  $("hits").replaceChildren(...hits.map((h, i) => hitCard(h, i + 1, range)));
  $("legend").hidden = false;
  $("legend").textContent = hits.length
    ? `${hits.length} hits · heatmap: each cell is one MSA layer's routing score, ` +
      `pale ${range.lo.toFixed(3)} → dark ${range.hi.toFixed(3)}`
    : "No memory matched.";
}

function layerScores(hit) {
  const scores = hit.explanation ? hit.explanation.layer_scores : {};
  return Object.entries(scores).map(([layer, score]) => [Number(layer), score])
    .sort((a, b) => a[0] - b[0]);
}

function scoreRange(hits) {
  const all = hits.flatMap((h) => layerScores(h).map(([, s]) => s));
  return all.length ? { lo: Math.min(...all), hi: Math.max(...all) } : { lo: 0, hi: 1 };
}

function hitCard(hit, rank, range) {
  const forget = el("button", { type: "button", class: "danger", textContent: "Forget" });
  forget.addEventListener("click", () => confirmForget(hit.id, hit.text));
  const head = el("div", { class: "hit-head" },
    el("span", { class: "rank", textContent: `#${rank}` }),
    el("span", { class: "score", textContent: `score ${hit.score.toFixed(3)}` }),
    el("code", { title: hit.id, textContent: short(hit.id) }),
    el("span", { class: "kind", textContent: hit.kind }), forget);
  const parts = [head, heatmap(hit, range), highlighted(hit)];
  if (hit.explanation && Object.keys(hit.explanation.channels).length) {
    parts.push(channels(hit.explanation.channels));
  }
  return el("li", { class: "hit", "data-id": hit.id }, ...parts);
}

function heatmap(hit, range) {
  const span = range.hi - range.lo || 1;
  const cells = layerScores(hit).map(([layer, score]) => {
    const t = (score - range.lo) / span;
    const cell = el("div", { class: "cell", "data-layer": String(layer),
      "data-score": String(score), title: `layer ${layer}: ${score.toFixed(4)}`,
      textContent: String(layer) });
    cell.style.background = `hsl(215, 75%, ${92 - 62 * t}%)`;
    cell.style.color = t > 0.55 ? "#fff" : "#123";
    return cell;
  });
  const best = hit.explanation ? `best chunk ${hit.explanation.best_chunk}` : "";
  return el("div", { class: "heatmap-row" },
    el("span", { class: "muted", textContent: "layers" }),
    el("div", { class: "heatmap", "data-layers": String(cells.length) }, ...cells),
    el("span", { class: "muted", textContent: best }));
}

function highlighted(hit) {
  const text = hit.text;
  const chunk = hit.explanation ? hit.explanation.best_chunk_text : "";
  const box = el("p", { class: "hit-text" });
  let at = chunk ? text.indexOf(chunk) : -1;
  let match = chunk;
  if (at < 0 && chunk.trim()) {
    match = chunk.trim();
    at = text.indexOf(match);
  }
  if (at < 0) {
    box.append(text);
    if (chunk) box.append(el("br"), "matched chunk: ", el("mark", { textContent: chunk }));
    return box;
  }
  box.append(text.slice(0, at), el("mark", { textContent: match }), text.slice(at + match.length));
  return box;
}

function channels(values) {
  const names = Object.keys(values).filter((k) => !k.endsWith("_rank"));
  return el("ul", { class: "channels" }, ...names.map((name) => {
    const rank = values[`${name}_rank`];
    const label = `${name} ${values[name].toFixed(3)}` + (rank === undefined ? "" : ` (rank ${rank})`);
    return el("li", { "data-channel": name, textContent: label });
  }));
}

// ------------------------------------------------------------------ forget
function confirmForget(id, text) {
  const dialog = $("confirm");
  $("confirm-id").textContent = id;
  $("confirm-text").textContent = preview(text, 160);
  dialog.returnValue = "";
  dialog.onclose = () => {
    if (dialog.returnValue === "forget") forget(id).catch(showError);
  };
  dialog.showModal();
}

async function forget(id) {
  const { deleted } = await api(`/memories/${encodeURIComponent(id)}?${nsQuery()}`,
    { method: "DELETE" });
  for (const node of document.querySelectorAll(`#hits [data-id="${CSS.escape(id)}"]`)) node.remove();
  toast(`Forgot ${deleted} memor${deleted === 1 ? "y" : "ies"} (${short(id)}).`);
  await Promise.all([loadMemories(), loadHealth()]);
}

// ------------------------------------------------------------------ start
async function refresh() {
  showError(null);
  await loadHealth();
  await loadNamespaces();
  pickNamespace(state.namespace);
  $("search").disabled = false; // searching before the namespace is known would race it
}

function start() {
  $("api-key").value = sessionStorage.getItem(KEY) || "";
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (key) sessionStorage.setItem(KEY, key);
    else sessionStorage.removeItem(KEY);
    refresh().catch(showError);
  });
  $("search-form").addEventListener("submit", (e) => { showError(null); search(e).catch(showError); });
  $("prev").addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - PAGE);
    loadMemories().catch(showError);
  });
  $("next").addEventListener("click", () => {
    state.offset += PAGE;
    loadMemories().catch(showError);
  });
  refresh().catch(showError);
}

start();
