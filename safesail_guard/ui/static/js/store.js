// Shared state of the page and a tiny event bus between the views.
//
// Events: "ready" (info and map loaded), "conversation" (an exchange was added or the chat cleared),
// "active" (features active in the conversation changed), "steer" (the steering list changed),
// "auth-required" ({message, hadKey}), "view" ({name}: asks app.js to switch tabs), "shown" ({name}: a tab was
// shown), "focus-feature" / "add-steer" / "card" ({id}), "show-trajectory" ({n}).

const bus = new EventTarget();

export function on(type, fn) {
  bus.addEventListener(type, (ev) => fn(ev.detail));
}

export function emit(type, detail = {}) {
  bus.dispatchEvent(new CustomEvent(type, { detail }));
}

export const store = {
  info: null, // GET /v1/safesail/info
  features: new Map(), // id -> map entry (GET /v1/safesail/map)
  layers: [],
  presentDomains: [],
  messages: [], // {role, content, exchange?} in conversation order
  exchanges: [], // one per chat request: see chat.js `makeExchange`
  active: new Set(), // feature ids that fired on content tokens of the conversation
  steer: [], // [{feature_id, op, value}]
};

/** The map entry of a feature id, or a stub when the database does not know it. */
export function feature(id) {
  return store.features.get(id) || { id, layer: layerOf(id), domain: null, domains: [], concepts: [],
                                     explanation: null, corr: null };
}

/** The layer in a "<layer>_<latent>" id. */
export function layerOf(id) {
  const n = parseInt(String(id).split("_")[0], 10);
  return Number.isFinite(n) ? n : null;
}

/** A token's hits, strongest (by normalised activation) first. */
export function sortedHits(token) {
  return [...(token.hits || [])].sort((a, b) => b.normalized - a.normalized || (a.feature_id < b.feature_id ? -1 : 1));
}

/** The feature that tints a token (its strongest hit), or null. */
export function strongest(token) {
  const hits = sortedHits(token);
  return hits.length ? hits[0] : null;
}
