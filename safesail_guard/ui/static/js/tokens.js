// Token strips: every token a button tinted by the domain of its strongest feature; picking one shows its
// features in the inspector. Used by the chat and by the steering comparison.

import { el, tokenLabel, isBlank, arrowNav, fmt, $$ } from "./dom.js";
import { domainColor, rgba, domainLabel } from "./domains.js";
import { feature, strongest } from "./store.js";
import { showToken } from "./inspector.js";

/** The background of a token whose strongest feature has normalised activation `n`. */
export function tint(domain, n) {
  return rgba(domainColor(domain), Math.min(0.85, 0.25 + 0.6 * Math.min(1, Math.max(0, n))));
}

/** A strip of token buttons. `ctx` says where they come from ({exchange, part}) and travels to the inspector. */
export function tokenStrip(tokens, ctx, label) {
  const strip = el("div", { class: "tokens", role: "group", "aria-label": label });
  for (const tok of tokens) {
    const top = strongest(tok);
    const dom = top ? feature(top.feature_id).domain : null;
    const n = tok.hits ? tok.hits.length : 0;
    const what = n
      ? `${n} feature${n > 1 ? "s" : ""}, strongest ${top.feature_id} (${domainLabel(dom)}, ${fmt(top.normalized)})`
      : "no safety feature";
    const cls = "tok" + (n ? "" : " quiet") + (isBlank(tok.text) ? " ws" : "") + (tok.content ? "" : " template");
    const btn = el("button", {
      type: "button", class: cls,
      "aria-pressed": "false", "aria-label": `token ${JSON.stringify(tok.text)}: ${what}`, title: what,
      dataset: { pos: tok.position, scope: tok.scope, hits: n, domain: dom || "" },
      onclick: () => pick(btn, tok, ctx),
    }, tokenLabel(tok.text));
    if (top) {
      btn.style.background = tint(dom, top.normalized);
      btn.style.borderColor = rgba(domainColor(dom), 0.9);
    }
    strip.append(btn);
  }
  arrowNav(strip, ".tok");
  return strip;
}

function pick(btn, tok, ctx) {
  for (const b of $$('.tok[aria-pressed="true"]')) b.setAttribute("aria-pressed", "false");
  btn.setAttribute("aria-pressed", "true");
  showToken(tok, ctx);
}

/** The tokens of the last user message among the prompt tokens (the last run of role "user"). */
export function lastUserRun(promptTokens) {
  let end = -1;
  for (let i = promptTokens.length - 1; i >= 0; i--) {
    if (promptTokens[i].role === "user" && promptTokens[i].content) { end = i; break; }
  }
  if (end < 0) return [];
  let start = end;
  while (start > 0 && promptTokens[start - 1].role === "user" && promptTokens[start - 1].content) start--;
  return promptTokens.slice(start, end + 1);
}
