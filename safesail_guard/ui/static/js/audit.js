// Audit view: recent guard decisions from the audit log (GET /v1/safesail/audit), newest first, filtered by
// action, stage, concept and time.

import { api } from "./api.js";
import { el, fill, fmt, $, short } from "./dom.js";
import { swatch, legendDomains } from "./domains.js";
import { store, on } from "./store.js";
import { badge } from "./verdict.js";
import { showFeature } from "./inspector.js";

let visible = false;
let seq = 0;

function when(t) {
  const d = new Date(t * 1000);
  return el("time", { datetime: d.toISOString(), title: d.toLocaleString() }, d.toLocaleTimeString());
}

function row(r) {
  const top = [...(r.features || [])].sort((a, b) => (b.normalized ?? 0) - (a.normalized ?? 0))[0];
  const concepts = Object.entries(r.concepts || {}).filter(([, v]) => v >= 0.5).sort((a, b) => b[1] - a[1]);
  return el("tr", { dataset: { requestId: r.request_id, action: r.action, stage: r.stage } },
    el("td", {}, when(r.time)),
    el("td", { class: "mono", title: r.request_id }, short(r.request_id, 14)),
    el("td", {}, r.stage),
    el("td", {}, badge(r.action)),
    el("td", {}, (r.rules || []).map((x) => el("span", { class: "chip" }, x))),
    el("td", {}, top ? el("button", { type: "button", class: "link", title: top.explanation || "",
      onclick: () => showFeature(top.id) }, `${top.id} ${fmt(top.normalized)}`) : "–"),
    el("td", {}, concepts.map(([name, v]) => el("span", { class: "chip" }, swatch(name), `${name} ${fmt(v)}`))),
    el("td", {}, fmt(r.score)),
    el("td", { class: "text", title: r.text || r.text_sha256 || "" },
      r.text ?? (r.text_sha256 ? `sha256 ${r.text_sha256.slice(0, 12)}…` : "–")));
}

export async function refreshAudit() {
  const mine = ++seq;
  const err = $("#audit-error");
  const params = {
    action: $("#audit-action").value, stage: $("#audit-stage").value, concept: $("#audit-concept").value,
    since: $("#audit-since").value, limit: $("#audit-limit").value || 50,
  };
  try {
    const res = await api("v1/safesail/audit", { params });
    if (mine !== seq) return;
    err.textContent = "";
    fill($("#audit-rows"), res.data.map(row));
    const n = res.data.length;
    $("#audit-count").textContent = `${n} decision${n === 1 ? "" : "s"}${res.has_more ? " (more in the log)" : ""}`;
  } catch (e) {
    if (mine === seq) err.textContent = e.message;
  }
}

export function initAudit() {
  $("#audit-form").addEventListener("submit", (ev) => { ev.preventDefault(); refreshAudit(); });
  for (const id of ["#audit-action", "#audit-stage", "#audit-concept", "#audit-since"]) {
    $(id).addEventListener("change", refreshAudit);
  }
  on("ready", () => {
    const box = $("#audit-concept");
    fill(box, el("option", { value: "" }, "any"),
      legendDomains(store.info.domains, store.presentDomains).map((d) => el("option", { value: d }, d)));
  });
  on("shown", ({ name }) => { visible = name === "audit"; if (visible) refreshAudit(); });
  on("conversation", () => { if (visible) refreshAudit(); });
}
