// The side panel of the Cortex playground: the settings a request is sent with (provider and
// model from GET /api/providers, the client API key) and the workers' status from
// GET /api/health, refreshed every few seconds. chat.js, loaded after it, sends the requests.
"use strict";

const $ = (id) => document.getElementById(id);
const HEALTH_REFRESH_MS = 3000;
const KEY_STORAGE = "cortex.apiKey";

const panel = {
  providers: [], // the last /api/providers answer
  providersSignature: "", // what the selects were built from, so a refresh rebuilds them only on change
};

// --- the client API key: this tab's session storage only -------------------------------------

function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: "Bearer " + key } : {};
}

function restoreKey() {
  try {
    const key = sessionStorage.getItem(KEY_STORAGE);
    if (key) $("api-key").value = key;
  } catch (_) {
    /* storage disabled: the field still works for this page */
  }
}

function rememberKey() {
  try {
    const key = $("api-key").value.trim();
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
  } catch (_) {
    /* storage disabled */
  }
}

// --- providers and models --------------------------------------------------------------------

function fillModels() {
  const chosen = panel.providers.find((p) => p.name === $("provider").value);
  const previous = $("model").value;
  const models = chosen ? chosen.models : [...new Set(panel.providers.flatMap((p) => p.models))];
  const label = chosen && chosen.default_model ? `default (${chosen.default_model})` : "default";
  $("model").replaceChildren(new Option(label, ""), ...models.map((m) => new Option(m, m)));
  if (models.includes(previous)) $("model").value = previous;
}

async function loadProviders() {
  try {
    const response = await fetch("/api/providers", { headers: authHeaders() });
    if (!response.ok) return;
    const providers = (await response.json()).providers;
    const signature = JSON.stringify(providers.map((p) => [p.name, p.type, p.models, p.default_model, p.demo]));
    if (signature === panel.providersSignature) return;
    panel.providers = providers;
    panel.providersSignature = signature;
    const previous = $("provider").value;
    $("provider").replaceChildren(
      new Option("auto", ""),
      ...providers.map((p) => new Option(`${p.name} (${p.demo ? "demo" : p.type})`, p.name)),
    );
    if (providers.some((p) => p.name === previous)) $("provider").value = previous;
    fillModels();
  } catch (_) {
    /* the status panel says the gateway is unreachable */
  }
}

// --- the status panel ------------------------------------------------------------------------

function workerItem(name, worker) {
  const li = document.createElement("li");
  li.dataset.worker = name;
  li.dataset.status = worker.status;
  const dot = document.createElement("span");
  dot.className = "dot";
  dot.setAttribute("aria-hidden", "true");
  const label = document.createElement("span");
  label.className = "name";
  label.textContent = name;
  const status = document.createElement("span");
  status.className = "status";
  status.textContent = worker.status;
  const details = [];
  if (worker.type) details.push(worker.type);
  if (worker.latency_ms != null) details.push(`${Math.round(worker.latency_ms)} ms`);
  if (worker.in_flight) details.push(`${worker.in_flight} streaming`);
  if (worker.circuit && worker.circuit.state && worker.circuit.state !== "closed") details.push(`circuit ${worker.circuit.state}`);
  const detail = document.createElement("span");
  detail.className = "detail";
  detail.textContent = details.join(" · ");
  li.append(dot, label, status, detail);
  if (worker.error) {
    const error = document.createElement("span");
    error.className = "worker-error";
    error.textContent = worker.error;
    li.appendChild(error);
  }
  return li;
}

async function refreshHealth() {
  const overall = $("overall");
  try {
    const body = await (await fetch("/api/health", { headers: authHeaders() })).json();
    const workers = Object.entries(body.workers || {});
    $("workers").replaceChildren(...workers.map(([name, worker]) => workerItem(name, worker)));
    const summary = body.summary || {};
    overall.dataset.status = body.status;
    overall.textContent = `${body.status} · ${summary.available ?? 0} of ${summary.total ?? 0} workers available`;
    $("checked").textContent = `refreshed ${new Date().toLocaleTimeString()} · every ${HEALTH_REFRESH_MS / 1000} s`;
  } catch (_) {
    overall.dataset.status = "unreachable";
    overall.textContent = "gateway unreachable";
  }
}

function scheduleRefresh() {
  setTimeout(async () => {
    if (!document.hidden) await Promise.all([refreshHealth(), loadProviders()]);
    scheduleRefresh();
  }, HEALTH_REFRESH_MS);
}

// --- wiring ----------------------------------------------------------------------------------

$("provider").addEventListener("change", fillModels);
$("api-key").addEventListener("input", rememberKey);
$("key-form").addEventListener("submit", (event) => event.preventDefault());

restoreKey();
loadProviders();
refreshHealth();
scheduleRefresh();
