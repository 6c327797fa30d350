// Neuron map view: every database feature at its stored map position, coloured by level-0 domain, with a
// legend that hides domains, full-text search (GET /v1/safesail/features?q=) whose hits are highlighted and
// listed, and rings on the features active in the current conversation.

import { api } from "./api.js";
import { el, fill, fmt, $, short } from "./dom.js";
import { domainLabel, legendDomains, swatch } from "./domains.js";
import { store, on, emit } from "./store.js";
import { StarMap } from "./starmap.js";
import { showFeature } from "./inspector.js";

let map = null;
let results = [];

function tipFor(entry) {
  return [
    el("strong", {}, entry.id), " ",
    el("span", { class: "muted" }, `layer ${entry.layer} · ${domainLabel(entry.domain)}`),
    el("br"), short(entry.explanation || "(no explanation)", 140),
    el("br"), el("span", { class: "muted" }, `CorrScore ${fmt(entry.corr)}`),
  ];
}

function pick(id) {
  map.select(id);
  showFeature(id);
}

function renderLegend() {
  const counts = new Map();
  for (const f of store.features.values()) {
    if (f.x !== null) counts.set(f.domain || "", (counts.get(f.domain || "") || 0) + 1);
  }
  const names = legendDomains(store.info.domains, store.presentDomains);
  if (counts.has("")) names.push("");
  fill($("#map-legend"), names.map((d) => {
    const box = el("input", { type: "checkbox", checked: !map.hidden.has(d), dataset: { domain: d },
      onchange: () => {
        const hidden = new Set(map.hidden);
        box.checked ? hidden.delete(d) : hidden.add(d);
        map.setHidden(hidden);
      } });
    return el("li", {}, el("label", {}, box, swatch(d || null), `${domainLabel(d || null)} `,
      el("span", { class: "muted" }, `(${counts.get(d) || 0})`)));
  }));
}

function renderResults(query) {
  const list = $("#map-results");
  if (!query) {
    fill(list);
    $("#map-results-title").textContent = "Search results";
    return;
  }
  const n = results.length;
  $("#map-results-title").textContent = `${n} result${n === 1 ? "" : "s"} for “${short(query, 24)}”`;
  fill(list, results.map((r) => {
    return el("li", {}, el("button", { type: "button", dataset: { featureId: r.id },
      onclick: () => { map.centerOn(r.id); pick(r.id); } },
      swatch(r.domain), el("strong", {}, r.id),
      r.x === null ? el("span", { class: "muted" }, " (not on the map)") : null,
      el("br"), short(r.explanation || "(no explanation)", 90)));
  }));
}

async function search(query) {
  const q = query.trim();
  if (!q) { clear(); return; }
  try {
    const res = await api("v1/safesail/features", { params: { q, limit: 50 } });
    results = res.data;
  } catch (e) {
    results = [];
    fill($("#map-results"), el("li", { class: "error" }, e.message));
    return;
  }
  map.setHighlight(results.map((r) => r.id));
  renderResults(q);
}

function clear() {
  results = [];
  $("#map-search").value = "";
  map.setHighlight([]);
  renderResults("");
}

export function initMap() {
  map = new StarMap($("#map-canvas"), $("#map-tip"), { onPick: (id) => showFeature(id), describe: tipFor });
  // test hook: what the canvas holds and where each point is on the page
  window.__starmap = {
    get points() { return map.points.map((p) => p.id); },
    get drawn() { return map.drawn; },
    get highlighted() { return [...map.highlight]; },
    get active() { return [...map.active]; },
    get selected() { return map.selected; },
    get zoom() { return map.k; },
    screenOf(id) {
      const p = map.toScreen(id);
      if (!p) return null;
      const r = map.canvas.getBoundingClientRect();
      return { x: r.left + p.x, y: r.top + p.y };
    },
  };
  $("#map-search-form").addEventListener("submit", (ev) => { ev.preventDefault(); search($("#map-search").value); });
  $("#map-clear").addEventListener("click", clear);
  $("#map-reset").addEventListener("click", () => map.resetView());
  on("ready", () => {
    const positioned = [...store.features.values()].filter((f) => f.x !== null && f.y !== null);
    map.setPoints(positioned);
    const missing = store.features.size - positioned.length;
    $("#map-count").textContent = `${store.features.size} features · ${positioned.length} on the map` +
      (missing ? ` · ${missing} without a map position` : "");
    renderLegend();
    map.setActive(store.active);
  });
  on("active", ({ ids }) => map.setActive(ids));
  on("focus-feature", ({ id }) => {
    emit("view", { name: "map" });
    requestAnimationFrame(() => { map.resize(); map.centerOn(id); map.select(id); });
  });
  on("card", ({ id }) => map.select(id));
}
