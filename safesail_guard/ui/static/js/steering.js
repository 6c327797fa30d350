// Steering view: choose features, an op (add / clamp / scale) and a value each, regenerate the last user
// message with and without `"safesail": {"steer": [...]}`, and compare the two answers and their decisions.

import { api } from "./api.js";
import { el, fill, fmt, $, short } from "./dom.js";
import { swatch } from "./domains.js";
import { store, on, emit, feature } from "./store.js";
import { complete, makeExchange } from "./chat.js";
import { tokenStrip } from "./tokens.js";
import { verdictLine, badge } from "./verdict.js";

const OPS = ["add", "clamp", "scale"];
const DEFAULT_VALUE = { add: 4, clamp: 0, scale: 0 };
let running = false;

function addFeature(id) {
  if (!store.steer.some((s) => s.feature_id === id)) {
    store.steer.push({ feature_id: id, op: "add", value: DEFAULT_VALUE.add });
  }
  renderRows();
  emit("steer");
}

function renderRows() {
  $("#steer-none").hidden = store.steer.length > 0;
  fill($("#steer-rows"), store.steer.map((s, i) => {
    const f = feature(s.feature_id);
    const op = el("select", { "aria-label": `op for ${s.feature_id}`, class: "steer-op",
      onchange: () => { s.op = op.value; } }, OPS.map((o) => el("option", { value: o, selected: o === s.op }, o)));
    const value = el("input", { type: "number", step: "any", min: "-1000", max: "1000", value: String(s.value),
      class: "steer-value", "aria-label": `value for ${s.feature_id}`,
      onchange: () => { const v = parseFloat(value.value); s.value = Number.isFinite(v) ? v : 0; } });
    return el("tr", { dataset: { featureId: s.feature_id } },
      el("td", {}, swatch(f.domain), el("strong", {}, s.feature_id), " ",
        el("span", { class: "muted" }, `layer ${f.layer ?? "?"}`),
        el("div", { class: "expl" }, short(f.explanation || "", 110))),
      el("td", {}, op), el("td", {}, value),
      el("td", {}, el("button", { type: "button", "aria-label": `remove ${s.feature_id}`,
        onclick: () => { store.steer.splice(i, 1); renderRows(); } }, "✕")));
  }));
}

async function suggest(text) {
  const q = text.trim();
  const list = $("#steer-suggest");
  if (!q) return;
  if (store.features.has(q)) {
    addFeature(q);
    $("#steer-add").value = "";
    fill(list);
    return;
  }
  try {
    const res = await api("v1/safesail/features", { params: { q, limit: 12 } });
    const item = (r) => el("li", {}, el("button", { type: "button", title: r.explanation || "",
      dataset: { featureId: r.id }, onclick: () => { addFeature(r.id); fill(list); } },
      `+ ${r.id} ${short(r.explanation || "", 40)}`));
    fill(list, res.data.length ? res.data.map(item) : el("li", { class: "muted" }, "No feature matches."));
  } catch (e) {
    fill(list, el("li", { class: "error" }, e.message));
  }
}

/** The conversation up to and including its last user message. */
function lastUserPrefix() {
  let last = -1;
  store.messages.forEach((m, i) => { if (m.role === "user" && !m.pending) last = i; });
  return last < 0 ? null : store.messages.slice(0, last + 1).map((m) => ({ role: m.role, content: m.content }));
}

function column(node, heading, result) {
  if (result.error) {
    fill(node, el("h3", {}, heading), el("p", { class: "error", role: "alert" }, result.error.message));
    return;
  }
  const ex = result.exchange;
  const ss = ex.safesail;
  const answer = ex.finish === "content_filter" || !ex.responseTokens.length
    ? el("div", { class: "answer" }, ex.content || "(empty answer)")
    : tokenStrip(ex.responseTokens, { exchange: ex, part: heading.toLowerCase() }, `${heading} answer tokens`);
  answer.classList.add("answer");
  const applied = (ss.steering || []).map((s) => `${s.feature_id} ${s.op} ${fmt(s.value, 2)}`).join(", ");
  fill(node,
    el("h3", {}, heading, " ", badge(ss.decision || "allow")),
    el("div", { class: "msg-head" }, ...[verdictLine(ss.final, "final")].flat()),
    answer,
    el("div", { class: "muted answer-text", hidden: true }, ex.content),
    el("p", { class: "muted" }, `finish: ${ex.finish}` + (applied ? ` · steering: ${applied}` : " · no steering")));
}

async function run() {
  if (running) return;
  const err = $("#steer-error");
  err.textContent = "";
  const messages = lastUserPrefix();
  if (!messages) { err.textContent = "Send a chat message first: steering regenerates the last user message."; return; }
  if (!store.steer.length) { err.textContent = "Pick at least one feature to steer."; return; }
  running = true;
  const button = $("#steer-run");
  button.disabled = true;
  $("#steer-last").textContent = `regenerating “${short(messages.at(-1).content, 50)}”…`;
  const steer = store.steer.map((s) => ({ feature_id: s.feature_id, op: s.op, value: Number(s.value) }));
  const call = async (extra, kind) => {
    try {
      const response = await complete(messages, extra);
      const ex = makeExchange(messages, response, kind);
      store.exchanges.push(ex);
      return { exchange: ex };
    } catch (e) {
      return { error: e };
    }
  };
  try {
    const steered = await call({ steer }, "steered");
    const plain = await call({}, "unsteered");
    $("#steer-compare").hidden = false;
    column($("#steer-plain"), "Unsteered", plain);
    column($("#steer-steered"), "Steered", steered);
    if (steered.error) err.textContent = `Steering was refused: ${steered.error.message}`;
    const diff = $("#steer-diff");
    if (plain.exchange && steered.exchange) {
      const same = plain.exchange.content === steered.exchange.content;
      diff.textContent = same ? "The two answers are identical." : "The answers differ.";
      diff.dataset.differs = String(!same);
    } else {
      diff.textContent = "";
      delete diff.dataset.differs;
    }
    emit("conversation", {});
  } finally {
    running = false;
    button.disabled = false;
    $("#steer-last").textContent = `last user message: “${short(messages.at(-1).content, 50)}”`;
  }
}

export function initSteering() {
  $("#steer-add-form").addEventListener("submit", (ev) => { ev.preventDefault(); suggest($("#steer-add").value); });
  $("#steer-run").addEventListener("click", run);
  on("add-steer", ({ id }) => { addFeature(id); emit("view", { name: "steering" }); });
  on("ready", () => {
    renderRows();
    if (store.info && !store.info.steering) {
      $("#steer-last").textContent = `This server runs in ${store.info.mode} mode: it will refuse to steer.`;
    }
  });
}
