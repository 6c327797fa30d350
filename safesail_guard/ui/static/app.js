// StarMap: the safesail-guard dashboard. Loads the server summary and the neuron map, then wires the five
// views (chat, map, trajectory, steering, audit) and the inspector. Everything comes from this server.

import { api, setApiKey } from "./js/api.js";
import { el, fill, $, $$ } from "./js/dom.js";
import { store, on, emit } from "./js/store.js";
import { initChat } from "./js/chat.js";
import { initMap } from "./js/mapview.js";
import { initTrajectory } from "./js/trajectory.js";
import { initSteering } from "./js/steering.js";
import { initAudit } from "./js/audit.js";

const VIEWS = ["chat", "map", "trajectory", "steering", "audit"];
let current = null;

function status(text) {
  $("#status").textContent = text;
}

function show(name, { focus = false } = {}) {
  if (!VIEWS.includes(name)) name = "chat";
  for (const tab of $$('[role="tab"]')) {
    const on_ = tab.dataset.view === name;
    tab.setAttribute("aria-selected", String(on_));
    tab.tabIndex = on_ ? 0 : -1;
    $(`#view-${tab.dataset.view}`).hidden = !on_;
  }
  if (focus) $(`#tab-${name}`).focus();
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  current = name;
  emit("shown", { name });
}

function initTabs() {
  const tabs = $$('[role="tab"]');
  for (const tab of tabs) {
    tab.addEventListener("click", () => show(tab.dataset.view));
    tab.addEventListener("keydown", (ev) => {
      const i = tabs.indexOf(tab);
      const j = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[ev.key];
      if (j === undefined) return;
      ev.preventDefault();
      show(tabs[(j + tabs.length) % tabs.length].dataset.view, { focus: true });
    });
  }
  window.addEventListener("hashchange", () => {
    const name = location.hash.slice(1);
    if (name !== current) show(name);
  });
  on("view", ({ name }) => show(name));
  show(location.hash.slice(1) || "chat");
}

function summary(info) {
  const db = info.database;
  const item = (k, v, title = "") => el("div", { title }, el("dt", {}, k), el("dd", {}, v));
  fill($("#summary"),
    item("model", info.model),
    item("mode", info.mode),
    item("policy", info.policy.name, info.policy.rules.map((r) => `${r.name}: ${r.action}`).join("\n")),
    item("database", `${db.features} features · layers ${db.layers.join("/")}`,
      `${db.model} · ${db.site} · map ${db.map_method}`));
}

function askForKey(message) {
  const form = $("#key-form");
  form.hidden = false;
  $("#key-msg").textContent = message;
  status("an API key is needed");
  $("#api-key").focus();
}

let loading = false;

async function load() {
  if (loading) return;
  loading = true;
  status("loading…");
  try {
    const [info, map] = await Promise.all([api("v1/safesail/info"), api("v1/safesail/map")]);
    store.info = info;
    store.layers = map.layers;
    store.presentDomains = map.domains;
    store.features = new Map(map.data.map((f) => [f.id, f]));
    summary(info);
    $("#key-form").hidden = true;
    status(`ready · ${info.database.features} features`);
    emit("ready");
  } catch (e) {
    if (e.status === 503) {
      status("the model is still loading; retrying…");
      setTimeout(load, 2000);
    } else if (e.status !== 401) {
      status(`cannot load the dashboard: ${e.message}`);
    }
  } finally {
    loading = false;
  }
}

function init() {
  initTabs();
  initChat();
  initMap();
  initTrajectory();
  initSteering();
  initAudit();
  on("auth-required", ({ message, hadKey }) =>
    askForKey(hadKey ? `That key was refused (${message}).` : "This server needs an API key."));
  $("#key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = $("#api-key").value.trim();
    if (!key) return;
    setApiKey(key);
    $("#api-key").value = "";
    $("#key-msg").textContent = "";
    load();
  });
  window.__safesail = { store };
  load();
}

init();
