// Small DOM helpers: elements are built with textContent only (never innerHTML), so model output, explanations
// and audit text can never inject markup.

/** el("button", {class: "x", onclick: fn, dataset: {id: 1}}, "label", child) */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** Replace the children of `node`. */
export function fill(node, ...children) {
  node.replaceChildren();
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

/** A number with `digits` decimals, or "–" for null. */
export function fmt(value, digits = 2) {
  return value === null || value === undefined || Number.isNaN(value) ? "–" : Number(value).toFixed(digits);
}

/** How a token's text is shown: visible marks for newlines, tabs and empty pieces; spaces kept. */
export function tokenLabel(text) {
  if (text === "") return "◌";
  return text.replace(/\r?\n/g, "↵").replace(/\t/g, "⇥");
}

/** True when a token is only whitespace (shown muted). */
export function isBlank(text) {
  return text.trim() === "";
}

/** Shorten `text` to `n` characters with an ellipsis. */
export function short(text, n = 80) {
  if (!text) return "";
  return text.length > n ? text.slice(0, n - 1) + "…" : text;
}

/** Arrow keys move focus between the buttons of a group (roving focus for token strips). */
export function arrowNav(container, selector) {
  container.addEventListener("keydown", (ev) => {
    if (!["ArrowLeft", "ArrowRight", "Home", "End"].includes(ev.key)) return;
    const items = $$(selector, container);
    const i = items.indexOf(document.activeElement);
    if (i < 0) return;
    let j = i;
    if (ev.key === "ArrowLeft") j = Math.max(0, i - 1);
    else if (ev.key === "ArrowRight") j = Math.min(items.length - 1, i + 1);
    else if (ev.key === "Home") j = 0;
    else j = items.length - 1;
    items[j].focus();
    ev.preventDefault();
  });
}
