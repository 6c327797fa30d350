// Chat view: talks to the guarded model through the proxy's own POST /v1/chat/completions with
// "safesail": {"tokens": true}, and shows every token of the query and of the answer as a button.

import { api } from "./api.js";
import { el, fill, $, short } from "./dom.js";
import { store, emit, on } from "./store.js";
import { tokenStrip, lastUserRun } from "./tokens.js";
import { verdictLine, badge } from "./verdict.js";

/** Chat request settings read from the form (shared with the steering view). */
export function settings() {
  const maxTokens = parseInt($("#opt-max-tokens").value, 10);
  const temperature = parseFloat($("#opt-temperature").value);
  return {
    max_tokens: Number.isFinite(maxTokens) && maxTokens > 0 ? maxTokens : undefined,
    temperature: Number.isFinite(temperature) ? temperature : 0,
  };
}

/** POST one chat completion with per-token features; `extra` is merged into the `safesail` options. */
export async function complete(messages, extra = {}) {
  const body = { model: store.info.model, messages, ...settings(), safesail: { tokens: true, ...extra } };
  if (body.max_tokens === undefined) delete body.max_tokens;
  return api("v1/chat/completions", { body });
}

/** Everything the views need from one answered request. */
export function makeExchange(messages, response, kind = "chat") {
  const ss = response.safesail || {};
  const tokens = ss.tokens || [];
  const prompt = tokens.filter((t) => t.scope === "prompt");
  const choice = (response.choices || [{}])[0] || {};
  return {
    n: store.exchanges.length + 1, kind, messages,
    userText: [...messages].reverse().find((m) => m.role === "user")?.content || "",
    response, safesail: ss, tokens, prompt,
    userTokens: lastUserRun(prompt),
    responseTokens: tokens.filter((t) => t.scope === "response"),
    content: choice.message?.content ?? "", finish: choice.finish_reason || "",
    requestId: ss.request_id || "",
  };
}

/** Feature ids that fired on the query or answer tokens of the conversation. */
function recomputeActive() {
  const ids = new Set();
  for (const ex of store.exchanges) {
    if (ex.kind !== "chat") continue;
    for (const t of [...ex.userTokens, ...ex.responseTokens]) for (const h of t.hits || []) ids.add(h.feature_id);
  }
  store.active = ids;
  emit("active", { ids });
}

/** The part of a message the guard did not read (it blocks at the offending prompt token), or "". */
function unreadTail(content, tokens) {
  const read = tokens.map((t) => t.text).join("");
  if (read.length >= content.length) return "";
  return content.startsWith(read) ? content.slice(read.length) : content;
}

function messageItem(msg) {
  const ex = msg.exchange;
  const li = el("li", { class: `msg ${msg.role}`, dataset: { role: msg.role } });
  const who = msg.role === "user" ? "You" : "Assistant";
  const head = el("div", { class: "msg-head" }, el("span", { class: "role" }, who));
  li.append(head);
  if (msg.role === "user") {
    if (ex) head.append(...[verdictLine(ex.safesail.prompt, "prompt")].flat());
    if (msg.pending) head.append(el("span", { class: "muted" }, "judging and generating…"));
    if (ex && ex.userTokens.length) {
      li.append(tokenStrip(ex.userTokens, { exchange: ex, part: "query" }, `Tokens of your message ${ex.n}`));
      const unread = unreadTail(msg.content, ex.userTokens);
      if (unread) {
        li.append(el("p", { class: "note" }, "The guard blocked here and read no further:"),
          el("div", { class: "msg-text unread" }, unread));
      }
    } else {
      li.append(el("div", { class: "msg-text" }, msg.content));
    }
    return li;
  }
  // assistant
  const ss = ex.safesail;
  head.append(...[verdictLine(ss.final, "final")].flat());
  if (ss.decision) {
    head.append(el("span", { class: "muted", title: "decision released to the client" }, "→"), badge(ss.decision));
  }
  head.append(el("span", { class: "chip", title: "finish_reason" }, ex.finish));
  head.append(el("button", { type: "button", class: "link", onclick: () => emit("show-trajectory", { n: ex.n }) },
    "trajectory"));
  if (ex.finish === "content_filter") {
    li.append(el("div", { class: "msg-text refusal" }, ex.content));
    if (ex.responseTokens.length) {
      li.append(el("p", { class: "note" }, "Generated before the block (withheld from the client):"));
      li.append(tokenStrip(ex.responseTokens, { exchange: ex, part: "answer" }, `Withheld tokens of answer ${ex.n}`));
    }
  } else if (ex.responseTokens.length) {
    li.append(tokenStrip(ex.responseTokens, { exchange: ex, part: "answer" }, `Tokens of answer ${ex.n}`));
  } else {
    li.append(el("div", { class: "msg-text" }, ex.content || "(empty answer)"));
  }
  return li;
}

function render() {
  const list = $("#messages");
  fill(list, store.messages.map(messageItem));
  $("#chat-empty").hidden = store.messages.length > 0;
  list.scrollTop = list.scrollHeight;
}

async function send(text) {
  const err = $("#chat-error");
  err.textContent = "";
  const userMsg = { role: "user", content: text, pending: true };
  store.messages.push(userMsg);
  render();
  const messages = store.messages.map((m) => ({ role: m.role, content: m.content }));
  const button = $("#chat-send");
  button.disabled = true;
  try {
    const response = await complete(messages);
    const ex = makeExchange(messages, response);
    store.exchanges.push(ex);
    userMsg.pending = false;
    userMsg.exchange = ex;
    store.messages.push({ role: "assistant", content: ex.content, exchange: ex });
    render();
    recomputeActive();
    emit("conversation", { exchange: ex });
  } catch (e) {
    store.messages.pop();
    render();
    err.textContent = `The request failed: ${e.message}`;
    $("#chat-input").value = text;
  } finally {
    button.disabled = false;
  }
}

export function initChat() {
  const input = $("#chat-input");
  $("#chat-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = input.value.trim();
    if (!text || !store.info) return;
    input.value = "";
    send(text);
  });
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $("#chat-form").requestSubmit();
    }
  });
  $("#chat-clear").addEventListener("click", () => {
    store.messages = [];
    store.exchanges = [];
    render();
    recomputeActive();
    emit("conversation", {});
  });
  on("ready", () => {
    const lim = store.info.limits || {};
    const box = $("#opt-max-tokens");
    if (lim.max_tokens) box.max = String(lim.max_tokens);
    if (lim.max_tokens && parseInt(box.value, 10) > lim.max_tokens) box.value = String(lim.max_tokens);
    render();
  });
}

/** One-line description of an exchange for pickers: "#2 how do vaccines… → The…". */
export function describe(ex) {
  return `#${ex.n} ${short(ex.userText, 40)} → ${short(ex.content, 30) || "(empty)"}`;
}
