// Trajectory view: for one exchange, which features fire at which layer across its tokens (the paper's
// Figure 10 read as a grid). Rows: the database's layers; columns: the query's tokens, then the answer's.

import { el, fill, fmt, $, $$, tokenLabel, short } from "./dom.js";
import { domainLabel, legendDomains, swatch } from "./domains.js";
import { store, on, emit, feature, sortedHits } from "./store.js";
import { showFeature } from "./inspector.js";
import { tint } from "./tokens.js";
import { describe } from "./chat.js";

/** "early · words" / "middle · scenes" / "late · concepts" for a layer (by depth in the model). */
function stageOf(layer, index, count) {
  const depth = store.info.model_layers;
  const frac = depth && depth > 1 ? layer / (depth - 1) : count > 1 ? index / (count - 1) : 0;
  if (frac < 1 / 3) return "early · words";
  if (frac < 2 / 3) return "middle · scenes";
  return "late · concepts";
}

function columns(ex, withTemplate) {
  const query = withTemplate ? ex.prompt : ex.userTokens;
  return { query, answer: ex.responseTokens };
}

function withTemplateLabel() {
  return $("#traj-template").checked ? "prompt (with chat template)" : "query";
}

function cell(token, layer) {
  const hits = sortedHits(token).filter((h) => feature(h.feature_id).layer === layer);
  const td = el("td");
  if (!hits.length) {
    td.title = `layer ${layer} · “${tokenLabel(token.text)}”: nothing fired`;
    return td;
  }
  const top = hits[0];
  const entry = feature(top.feature_id);
  const others = hits.length > 1 ? ` (+${hits.length - 1} more)` : "";
  const label = `layer ${layer} · “${tokenLabel(token.text)}” · ${top.feature_id} ${domainLabel(entry.domain)} ` +
    `${fmt(top.normalized)}${others} — ${short(entry.explanation || "", 100)}`;
  const btn = el("button", { type: "button", title: label, "aria-label": label, "aria-pressed": "false",
    dataset: { featureId: top.feature_id, layer, pos: token.position },
    onclick: () => {
      for (const b of $$('#traj-grid button[aria-pressed="true"]')) b.setAttribute("aria-pressed", "false");
      btn.setAttribute("aria-pressed", "true");
      showFeature(top.feature_id);
    } });
  btn.style.background = tint(entry.domain, top.normalized);
  td.append(btn);
  return td;
}

function render() {
  const select = $("#traj-message");
  const table = $("#traj-grid");
  const ex = store.exchanges.find((x) => String(x.n) === select.value);
  $("#traj-empty").hidden = Boolean(ex);
  if (!ex) {
    fill(table);
    table.dataset.layers = "0";
    table.dataset.tokens = "0";
    return;
  }
  const { query, answer } = columns(ex, $("#traj-template").checked);
  const layers = store.layers;
  const head = el("tr", {}, el("th", { scope: "col", class: "layer" }, el("span", { class: "sr-only" }, "Layer")));
  const addCols = (toks, cls) => {
    for (const t of toks) {
      head.append(el("th", { scope: "col", class: `tok-col ${cls}`, title: `${t.scope} · position ${t.position}` },
        tokenLabel(t.text)));
    }
  };
  addCols(query, "query");
  if (answer.length) head.append(el("th", { class: "sep", "aria-hidden": "true" }));
  addCols(answer, "resp");
  const rows = layers.map((layer, i) => {
    const atLayer = (t) => (t.hits || []).some((h) => feature(h.feature_id).layer === layer);
    const fired = [...query, ...answer].filter(atLayer).length;
    const total = query.length + answer.length;
    const tr = el("tr", { dataset: { layer } },
      el("th", { scope: "row", class: "layer", title: `${fired} of ${total} tokens have a feature at this layer` },
        `L${layer} `, el("span", { class: "muted" }, `${stageOf(layer, i, layers.length)} · ${fired}/${total}`)));
    for (const t of query) tr.append(cell(t, layer));
    if (answer.length) tr.append(el("td", { class: "sep", "aria-hidden": "true" }));
    for (const t of answer) tr.append(cell(t, layer));
    return tr;
  });
  const groups = el("tr", { class: "groups" }, el("th"),
    query.length ? el("th", { scope: "colgroup", colspan: query.length }, withTemplateLabel()) : null,
    answer.length ? el("th", { class: "sep" }) : null,
    answer.length ? el("th", { scope: "colgroup", colspan: answer.length }, "answer") : null);
  fill(table, el("thead", {}, groups, head), el("tbody", {}, rows));
  table.dataset.layers = String(layers.length);
  table.dataset.tokens = String(query.length + answer.length);
}

function refreshOptions(selectN) {
  const select = $("#traj-message");
  const keep = selectN ?? select.value;
  fill(select, store.exchanges.map((ex) => el("option", { value: ex.n },
    (ex.kind === "chat" ? "" : `[${ex.kind}] `) + describe(ex))));
  const last = store.exchanges.filter((x) => x.kind === "chat").at(-1);
  if (keep && store.exchanges.some((x) => String(x.n) === String(keep))) select.value = String(keep);
  else if (last) select.value = String(last.n);
  render();
}

export function initTrajectory() {
  $("#traj-message").addEventListener("change", render);
  $("#traj-template").addEventListener("change", render);
  on("ready", () => {
    const names = legendDomains(store.info.domains, store.presentDomains);
    fill($("#traj-legend"), names.map((d) => el("li", {}, swatch(d), domainLabel(d))));
    refreshOptions();
  });
  on("conversation", ({ exchange }) => refreshOptions(exchange && exchange.kind === "chat" ? exchange.n : undefined));
  on("show-trajectory", ({ n }) => {
    refreshOptions(n);
    emit("view", { name: "trajectory" });
  });
}
