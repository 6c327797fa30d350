// The dashboard's only door to the server: same-origin fetches to the proxy's own API, with the API key (when
// the server asks for one) kept in sessionStorage and sent as `Authorization: Bearer`.

import { emit } from "./store.js";

const KEY_NAME = "safesail.apiKey";
const ROOT = new URL("../", document.baseURI); // the page lives at /ui/: the API is one level up

/** An OpenAI-style error from the server (or a network failure, status 0). */
export class ApiError extends Error {
  constructor(status, message, body = null) {
    super(message);
    this.status = status;
    this.body = body;
    this.param = body?.error?.param ?? null;
    this.code = body?.error?.code ?? null;
  }
}

export function apiKey() {
  try { return sessionStorage.getItem(KEY_NAME) || ""; } catch { return ""; }
}

export function setApiKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY_NAME, key);
    else sessionStorage.removeItem(KEY_NAME);
  } catch { /* storage disabled: the key lasts until the page is left */ }
}

/** `api("v1/safesail/map")`, `api("v1/chat/completions", {body})`: parsed JSON or a thrown `ApiError`. */
export async function api(path, { body = undefined, method = undefined, params = undefined } = {}) {
  const url = new URL(path.replace(/^\//, ""), ROOT);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, String(v));
  }
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  let res;
  try {
    res = await fetch(url, { method: method || (body !== undefined ? "POST" : "GET"), headers,
                             body: body !== undefined ? JSON.stringify(body) : undefined });
  } catch (err) {
    throw new ApiError(0, `cannot reach the server (${err.message})`);
  }
  let data = null;
  try { data = await res.json(); } catch { data = null; }
  if (!res.ok) {
    const message = data?.error?.message || `${res.status} ${res.statusText}`;
    const err = new ApiError(res.status, message, data);
    if (res.status === 401) emit("auth-required", { message, hadKey: Boolean(key) });
    throw err;
  }
  return data;
}
