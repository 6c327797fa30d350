// The guard's decision as badges and chips: one stage of the `safesail` field (prompt or final).

import { el, fmt } from "./dom.js";
import { swatch } from "./domains.js";

/** Badge for an action (allow, log, steer, flag, block). */
export function badge(action, title = "") {
  return el("span", { class: `badge ${action}`, title: title || `guard decision: ${action}` }, action);
}

/** Decision badge, one chip per matched rule (with its reason), the risk score and the strongest concepts. */
export function verdictLine(stage, label) {
  if (!stage) return el("span", { class: "muted" }, "no verdict");
  const parts = [el("span", { class: "muted" }, label), badge(stage.decision, `${label}: ${stage.decision}`)];
  for (const r of stage.rules || []) {
    const at = r.span_text ? ` — at “${r.span_text}”` : "";
    const why = `${r.rule} (${r.kind}, ${r.action}, ${r.scope}): ${r.reason}${at}`;
    parts.push(el("span", { class: "chip rule", title: why, dataset: { rule: r.rule } }, `${r.rule} → ${r.action}`));
  }
  if (stage.score !== null && stage.score !== undefined) {
    parts.push(el("span", { class: "chip", title: "risk score in [0, 1]" }, `risk ${fmt(stage.score)}`));
  }
  const concepts = Object.entries(stage.concepts || {}).filter(([, v]) => v >= 0.5).sort((a, b) => b[1] - a[1]);
  for (const [name, v] of concepts.slice(0, 3)) {
    parts.push(el("span", { class: "chip", title: `domain score ${fmt(v, 3)}` }, swatch(name), `${name} ${fmt(v)}`));
  }
  return parts;
}
