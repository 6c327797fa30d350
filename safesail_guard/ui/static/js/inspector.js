// The inspector (right column): the features active on a token, strongest first, or one feature's card with its
// top activation contexts (GET /v1/safesail/features/{id}).

import { api } from "./api.js";
import { el, fill, fmt, $, tokenLabel } from "./dom.js";
import { domainColor, domainLabel, rgba, swatch } from "./domains.js";
import { feature, sortedHits, emit } from "./store.js";

let seq = 0; // guards against a slow card answering after a newer pick
let lastToken = null;

function title(text, sub) {
  $("#insp-title").textContent = text;
  return sub ? el("p", { class: "insp-sub" }, sub) : null;
}

/** One feature as a list item: id, strength, concepts, explanation, CorrScore, and actions. */
function featureItem(hit, entry) {
  const n = hit ? hit.normalized : null;
  const bar = el("div", { class: "bar", "aria-hidden": "true" }, el("span"));
  bar.firstChild.style.width = `${Math.min(100, Math.max(2, (n ?? 0) * 100))}%`;
  bar.firstChild.style.background = domainColor(entry.domain);
  return el("li", { class: "feat", dataset: { featureId: entry.id } },
    el("div", { class: "feat-head" },
      swatch(entry.domain),
      el("button", { type: "button", class: "link feat-id", title: "open the feature card",
                     onclick: () => showFeature(entry.id) }, entry.id),
      el("span", { class: "muted" }, `layer ${entry.layer} · latent ${entry.latent ?? "?"}`),
      hit ? el("span", { class: "chip", title: `activation ${fmt(hit.activation, 4)} = ${fmt(n, 3)} × max_act` },
        `norm ${fmt(n)}`) : null),
    hit ? bar : null,
    el("div", { class: "meta" }, entry.concepts.length ? entry.concepts.join(", ") : domainLabel(entry.domain)),
    el("p", { class: "expl" }, entry.explanation || "(no explanation)"),
    el("div", { class: "meta" }, `CorrScore ${fmt(entry.corr)} (token) · ${fmt(entry.segment_corr)} (segment)`),
    el("div", { class: "actions" },
      el("button", { type: "button", onclick: () => showFeature(entry.id) }, "Card"),
      el("button", { type: "button", onclick: () => emit("focus-feature", { id: entry.id }) }, "On map"),
      el("button", { type: "button", onclick: () => emit("add-steer", { id: entry.id }) }, "Steer")));
}

/** Show the safety features active on one token (descending normalised activation). */
export function showToken(token, ctx = {}) {
  seq++;
  lastToken = { token, ctx };
  const hits = sortedHits(token);
  const where = `${token.scope}${token.role ? ` (${token.role})` : ""} · position ${token.position}` +
    (ctx.exchange ? ` · message ${ctx.exchange.n}` : "");
  const body = $("#insp-body");
  const sub = title(`Token “${tokenLabel(token.text)}”`, where);
  if (!hits.length) {
    fill(body, sub, el("p", { class: "hint", id: "insp-empty" }, "No safety feature fired on this token."));
    return;
  }
  fill(body, sub,
    el("p", { class: "muted" }, `${hits.length} feature${hits.length > 1 ? "s" : ""} fired, strongest first:`),
    el("ol", { class: "feat-list", id: "token-features", "aria-label": "Features on this token" },
      hits.map((h) => featureItem(h, feature(h.feature_id)))));
}

/** Tokens of one stored context with the activation as a tint, windowed around the peak. */
function contextLine(ex, domain, maxAct) {
  const acts = ex.acts;
  let peak = 0;
  for (let i = 1; i < acts.length; i++) if (acts[i] > acts[peak]) peak = i;
  const start = Math.max(0, peak - 14);
  const end = Math.min(ex.tokens.length, peak + 10);
  const line = el("p", { class: "context" });
  if (start > 0) line.append("…");
  for (let i = start; i < end; i++) {
    const span = el("span", {}, ex.tokens[i].replace(/\n/g, "↵"));
    const a = acts[i] / (Math.max(maxAct || 0, ex.max_act || 0) || 1);
    if (acts[i] > 0) {
      span.style.background = rgba(domainColor(domain), Math.min(0.9, 0.2 + 0.7 * a));
      span.title = `activation ${fmt(acts[i], 3)}`;
    }
    line.append(span);
  }
  if (end < ex.tokens.length) line.append("…");
  const src = `${ex.kind} · max ${fmt(ex.max_act, 3)}${ex.source ? " · " + ex.source : ""}`;
  line.append(el("span", { class: "src" }, src));
  return line;
}

/** Fetch and show one feature's card. */
export async function showFeature(id) {
  const mine = ++seq;
  const body = $("#insp-body");
  const sub = title(`Feature ${id}`, "loading…");
  fill(body, sub);
  let card;
  try {
    card = await api(`v1/safesail/features/${encodeURIComponent(id)}`, { params: { examples: 6 } });
  } catch (e) {
    if (mine === seq) fill(body, el("p", { class: "error", role: "alert" }, e.message));
    return;
  }
  if (mine !== seq) return;
  emit("card", { id });
  const prev = lastToken;
  const back = prev ? el("button", { type: "button", class: "link", onclick: () => showToken(prev.token, prev.ctx) },
    `← back to token “${tokenLabel(prev.token.text)}”`) : null;
  const concepts = card.concepts.map((c) => el("li", {}, swatch(c.level0), `${c.level0} / ${c.level1} `,
    el("span", { class: "muted" }, `precision ${fmt(c.precision)} · recall ${fmt(c.recall)}`)));
  fill(body,
    title(`Feature ${card.id}`, `layer ${card.layer} · latent ${card.latent} · ${domainLabel(card.domain)}`),
    el("div", { class: "card", id: "feature-card", dataset: { featureId: card.id } },
      back,
      el("p", { class: "expl" }, card.explanation || `(no explanation: ${card.explanation_status})`),
      el("ul", { class: "legend", "aria-label": "Concepts" }, concepts),
      el("dl", {},
        el("dt", {}, "CorrScore"), el("dd", {}, `${fmt(card.corr, 3)} token · ${fmt(card.segment_corr, 3)} segment`),
        el("dt", {}, "Simulator"), el("dd", {}, card.simulator || "–"),
        el("dt", {}, "SpScore"),
        el("dd", {}, `${fmt(card.sp_score, 2)}${card.sp_method ? " (" + card.sp_method + ")" : ""}`),
        el("dt", {}, "Max act."), el("dd", {}, fmt(card.max_act, 4)),
        el("dt", {}, "Threshold"), el("dd", {}, fmt(card.threshold, 4)),
        el("dt", {}, "Fire rate"), el("dd", {}, fmt(card.fire_rate, 5)),
        el("dt", {}, "Explainer"), el("dd", {}, `${card.explainer || "–"} (${card.explanation_status})`),
        el("dt", {}, "Map"), el("dd", {}, card.x === null ? "no position" : `${fmt(card.x, 3)}, ${fmt(card.y, 3)}`)),
      el("div", { class: "actions" },
        el("button", { type: "button", onclick: () => emit("focus-feature", { id: card.id }) }, "Show on map"),
        el("button", { type: "button", onclick: () => emit("add-steer", { id: card.id }) }, "Steer with it")),
      el("h3", {}, `Top contexts (${card.examples.length} of ${card.examples_total})`),
      card.examples.length ? card.examples.map((ex) => contextLine(ex, card.domain, card.max_act))
        : el("p", { class: "hint" }, "No stored contexts.")));
}
