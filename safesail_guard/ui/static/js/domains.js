// Colours of the ten level-0 risk domains (and a stable fallback for any other domain name).

import { el } from "./dom.js";

export const DOMAIN_COLORS = {
  pornography: "#ff8fb1",
  politics: "#5c9ded",
  violence: "#ff5252",
  terror: "#b388ff",
  hate: "#ff9f43",
  self_harm: "#d9a066",
  weapons: "#2ec4b6",
  drugs: "#7bd84f",
  cybercrime: "#ffd43b",
  privacy: "#a0aec0",
};
const EXTRA = ["#80deea", "#f48fb1", "#c5e1a5", "#ffe082", "#b39ddb", "#ffab91", "#90caf9", "#e6ee9c"];
export const NO_DOMAIN = "#6b7a99";

/** The colour of a domain name (null/undefined: the no-domain grey). */
export function domainColor(domain) {
  if (!domain) return NO_DOMAIN;
  if (DOMAIN_COLORS[domain]) return DOMAIN_COLORS[domain];
  let h = 0;
  for (const ch of domain) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return EXTRA[h % EXTRA.length];
}

/** `#rrggbb` -> `rgba(r, g, b, alpha)`. */
export function rgba(hex, alpha) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

/** Domain names for a legend: the canonical ten first, then any other present in the database. */
export function legendDomains(canonical, present) {
  const extra = present.filter((d) => !canonical.includes(d)).sort();
  return [...canonical, ...extra];
}

/** A small coloured dot for a domain (decorative: the text next to it names the domain). */
export function swatch(domain) {
  const dot = el("span", { class: "swatch", "aria-hidden": "true" });
  dot.style.background = domainColor(domain);
  return dot;
}

/** Human label: "self_harm" -> "self harm". */
export function domainLabel(domain) {
  return domain ? domain.replace(/_/g, " ") : "no domain";
}
