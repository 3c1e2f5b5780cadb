// Cortex playground: streams /api/chat with fetch and a stream reader, so it can POST.
"use strict";
const $ = (id) => document.getElementById(id);
const ERROR_MARKER = "\n[cortex-error] ";
let history = [];
let controller = null;
let providers = [];

function addMessage(role, text) {
  const el = document.createElement("div");
  el.className = "msg " + role;
  el.textContent = text;
  $("conversation").appendChild(el);
  el.scrollIntoView({ block: "end" });
  return el;
}

function setMeta(el, text, isError) {
  const meta = document.createElement("span");
  meta.className = "meta" + (isError ? " error" : "");
  meta.textContent = text;
  el.appendChild(meta);
}

async function errorText(response) {
  try {
    const body = await response.json();
    return `${response.status} ${body.error}: ${body.details}`;
  } catch (_) {
    return `${response.status} ${response.statusText}`;
  }
}

async function send(text) {
  history.push({ role: "user", content: text });
  addMessage("user", text);
  const reply = addMessage("assistant", "");
  const body = { messages: history };
  if ($("provider").value) body.provider = $("provider").value;
  if ($("model").value) body.model = $("model").value;
  controller = new AbortController();
  $("send").disabled = true; $("stop").disabled = false;
  const started = performance.now();
  let firstAt = null, textSoFar = "";
  try {
    const response = await fetch("/api/chat", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body), signal: controller.signal,
    });
    if (!response.ok) {
      reply.classList.add("error");
      reply.textContent = await errorText(response);
      history.pop();
      return;
    }
    const worker = response.headers.get("X-Cortex-Worker");
    const model = response.headers.get("X-Cortex-Model");
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      if (firstAt === null) firstAt = performance.now();
      textSoFar += decoder.decode(value, { stream: true });
      reply.textContent = textSoFar;
    }
    textSoFar += decoder.decode();
    const cut = textSoFar.indexOf(ERROR_MARKER);
    const answer = cut >= 0 ? textSoFar.slice(0, cut) : textSoFar;
    reply.textContent = answer;
    const total = (performance.now() - started) / 1000;
    setMeta(reply, `${worker} · ${model} · first token ${((firstAt - started) / 1000).toFixed(2)} s · total ${total.toFixed(2)} s`);
    if (cut >= 0) setMeta(reply, "stream failed: " + textSoFar.slice(cut + ERROR_MARKER.length).trim(), true);
    history.push({ role: "assistant", content: answer });
  } catch (err) {
    if (err.name === "AbortError") {
      setMeta(reply, "stopped", true);
      history.push({ role: "assistant", content: textSoFar });
    } else {
      reply.classList.add("error");
      reply.textContent = "Network error: " + err.message;
      history.pop();
    }
  } finally {
    controller = null;
    $("send").disabled = false; $("stop").disabled = true;
  }
}

function fillModels() {
  const chosen = providers.find((p) => p.name === $("provider").value);
  const models = chosen ? chosen.models : [...new Set(providers.flatMap((p) => p.models))];
  $("model").replaceChildren(new Option("default", ""), ...models.map((m) => new Option(m, m)));
}

async function loadProviders() {
  const response = await fetch("/api/providers");
  providers = (await response.json()).providers;
  $("provider").replaceChildren(new Option("auto", ""),
    ...providers.map((p) => new Option(p.demo ? `${p.name} (demo)` : p.name, p.name)));
  fillModels();
}

async function refreshHealth() {
  try {
    const body = await (await fetch("/api/health")).json();
    $("workers").replaceChildren(...Object.entries(body.workers).map(([name, w]) => {
      const li = document.createElement("li");
      li.className = w.status;
      li.textContent = `${name}: ${w.status}`;
      if (w.error) li.title = w.error;
      return li;
    }));
  } catch (_) { /* the next refresh will tell */ }
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || controller) return;
  $("prompt").value = "";
  send(text);
});
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("composer").requestSubmit(); }
});
$("stop").addEventListener("click", () => controller && controller.abort());
$("clear").addEventListener("click", () => { history = []; $("conversation").replaceChildren(); });
$("provider").addEventListener("change", fillModels);
loadProviders();
refreshHealth();
setInterval(refreshHealth, 5000);
