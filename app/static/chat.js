// Cortex playground. Replies come from POST /api/chat as Server-Sent Events, read with fetch and
// a stream reader (EventSource cannot POST) and decoded by SSEDecoder (sse.js):
//   data: {"text": ...}      one per delta, rendered as it arrives
//   event: done              who answered, model, finish reason, usage, attempts
//   event: error             {error, message, status}: status set (503...) when no worker could
//                            answer after keep-alives were sent; null when a started reply broke
//   : keep-alive             comments while the first token is awaited
// Errors before the stream are JSON {error, details, ...} with their HTTP status.
// Uses $, authHeaders and refreshHealth from panel.js, loaded before it.
"use strict";

const state = {
  history: [], // completed turns sent back to the gateway: [{role, content}]
  controller: null, // the AbortController of the reply being streamed
  generation: 0, // bumped by Clear, so a reply still finishing cannot write into a new conversation
};

// --- the conversation view ------------------------------------------------------------------

function conversation() {
  return $("conversation");
}

// Whether the end of `el` is on screen (give or take a line), so following the stream will not
// pull away a reader who scrolled up. The conversation scrolls on its own on a wide screen and
// with the page on a phone: the visible bottom is whichever ends first.
function nearBottom(el) {
  const visibleBottom = Math.min(conversation().getBoundingClientRect().bottom, window.innerHeight);
  return el.getBoundingClientRect().bottom - visibleBottom < 80;
}

function keepInView(el, stick) {
  if (stick) el.scrollIntoView({ block: "end" });
}

function addUserMessage(text) {
  $("empty-hint").hidden = true;
  const el = document.createElement("article");
  el.className = "msg user";
  el.setAttribute("aria-label", "You");
  el.textContent = text;
  conversation().appendChild(el);
  keepInView(el, true);
  return el;
}

function addReply() {
  const el = document.createElement("article");
  el.className = "msg assistant";
  el.dataset.state = "waiting";
  el.setAttribute("aria-label", "Reply");
  el.setAttribute("aria-busy", "true");
  const text = document.createElement("div");
  text.className = "text";
  const waiting = document.createElement("span");
  waiting.className = "waiting";
  waiting.textContent = "waiting for the first token…";
  text.appendChild(waiting);
  const meta = document.createElement("footer");
  meta.className = "meta";
  el.append(text, meta);
  conversation().appendChild(el);
  keepInView(el, true);
  return { el, text, meta, waiting };
}

function appendText(reply, piece) {
  const stick = nearBottom(reply.el);
  if (reply.waiting) {
    reply.waiting.remove();
    reply.waiting = null;
  }
  reply.text.appendChild(document.createTextNode(piece));
  reply.el.dataset.state = "streaming";
  keepInView(reply.el, stick);
}

function addMark(reply, kind, text) {
  const mark = document.createElement("p");
  mark.className = "mark " + kind;
  mark.setAttribute("role", kind === "error" ? "alert" : "status");
  mark.textContent = text;
  reply.el.insertBefore(mark, reply.meta);
}

function settle(reply, finalState) {
  if (reply.waiting) {
    reply.waiting.remove();
    reply.waiting = null;
  }
  reply.el.dataset.state = finalState;
  reply.el.removeAttribute("aria-busy");
}

// An error before any content: the reply becomes the error message.
function failReply(reply, message) {
  settle(reply, "failed");
  reply.el.classList.add("error");
  reply.text.textContent = message;
  reply.el.setAttribute("role", "alert");
}

// --- per-reply metadata ----------------------------------------------------------------------

function seconds(ms) {
  return (ms / 1000).toFixed(2) + " s";
}

function metaItem(field, label) {
  const item = document.createElement("span");
  item.dataset.field = field;
  item.textContent = label;
  return item;
}

function showMeta(reply, run, endedAt) {
  const items = [];
  const done = run.done || {};
  const worker = done.provider || run.worker;
  if (worker) items.push(metaItem("worker", worker));
  const model = done.model || run.model;
  if (model) items.push(metaItem("model", model));
  const attempts = done.attempts || run.attempts;
  if (attempts > 1) items.push(metaItem("attempts", `${attempts} attempts`));
  if (run.firstAt !== null) items.push(metaItem("ttft", `first token ${seconds(run.firstAt - run.startedAt)}`));
  items.push(metaItem("total", `total ${seconds(endedAt - run.startedAt)}`));
  const usage = done.usage;
  const generating = (endedAt - (run.firstAt ?? run.startedAt)) / 1000;
  if (run.firstAt !== null && generating > 0) {
    if (usage && usage.output_tokens) {
      items.push(metaItem("rate", `${(usage.output_tokens / generating).toFixed(1)} tok/s`));
    } else if (run.deltas > 1) {
      // No usage from the upstream: one delta is roughly one token.
      items.push(metaItem("rate", `≈${(run.deltas / generating).toFixed(1)} tok/s`));
    }
  }
  if (usage) {
    const parts = [];
    if (usage.input_tokens != null) parts.push(`${usage.input_tokens} in`);
    if (usage.output_tokens != null) parts.push(`${usage.output_tokens} out`);
    if (parts.length) items.push(metaItem("usage", parts.join(" / ") + " tokens"));
  }
  if (done.finish_reason && done.finish_reason !== "stop") {
    items.push(metaItem("finish", `finish: ${done.finish_reason}`));
  }
  reply.meta.replaceChildren(...items);
}

// --- errors ----------------------------------------------------------------------------------

function humanize(code) {
  const text = String(code || "error").replace(/_/g, " ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function describeError(status, title, message, retryAfter) {
  let text = `${status} ${title}`;
  if (message && message !== title) text += `: ${message}`;
  const wait = Number(retryAfter);
  if (retryAfter != null && retryAfter !== "" && Number.isFinite(wait)) {
    text += ` (retry in ${Math.max(1, Math.ceil(wait))} s)`;
  }
  return text;
}

// A response that is not a stream: the gateway's JSON error {error, details, ...}.
async function httpErrorText(response) {
  const retryAfter = response.headers.get("Retry-After");
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    /* not JSON: a proxy's page, say */
  }
  if (body && typeof body.error === "string") {
    return describeError(response.status, body.error, body.details, retryAfter);
  }
  if (body && body.error && body.error.message) return describeError(response.status, body.error.type, body.error.message, retryAfter);
  return describeError(response.status, response.statusText || "HTTP error", "", retryAfter);
}

// --- sending ---------------------------------------------------------------------------------

function numberField(id) {
  const raw = $(id).value.trim();
  return raw === "" ? undefined : Number(raw);
}

function requestBody() {
  const system = $("system").value.trim();
  const messages = system ? [{ role: "system", content: system }, ...state.history] : [...state.history];
  const body = { messages, stream_format: "sse" };
  if ($("provider").value) body.provider = $("provider").value;
  if ($("model").value) body.model = $("model").value;
  const temperature = numberField("temperature");
  if (temperature !== undefined) body.temperature = temperature;
  const maxTokens = numberField("max-tokens");
  if (maxTokens !== undefined) body.max_tokens = maxTokens;
  return body;
}

function requestHeaders() {
  return { "Content-Type": "application/json", Accept: "text/event-stream", ...authHeaders() };
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
  document.body.classList.toggle("busy", busy);
}

// Reads the SSE stream into the reply; returns when it ends (done, error, or cut).
async function readStream(response, reply, run) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const sse = new SSEDecoder();
  const handle = (event) => {
    let data;
    try {
      data = JSON.parse(event.data);
    } catch (_) {
      return;
    }
    if (event.type === "message" && typeof data.text === "string") {
      if (run.firstAt === null) run.firstAt = performance.now();
      run.text += data.text;
      run.deltas += 1;
      appendText(reply, data.text);
    } else if (event.type === "done") {
      run.done = data;
    } else if (event.type === "error") {
      run.error = data;
    }
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    sse.feed(decoder.decode(value, { stream: true })).forEach(handle);
    if (reply.waiting && sse.comments) reply.waiting.textContent = `waiting for the first token… (${sse.comments} keep-alive)`;
  }
  sse.feed(decoder.decode()).forEach(handle);
}

function finishRun(reply, run, turn) {
  const endedAt = performance.now();
  if (run.error && !run.text && run.error.status) {
    // No worker could answer, but keep-alives had already started the response: the error the
    // status line could not carry. Shown exactly like the same error before the stream.
    failReply(reply, describeError(run.error.status, humanize(run.error.error), run.error.message, run.error.retry_after));
    forget(turn, reply);
    return;
  }
  if (run.error) {
    settle(reply, "error");
    addMark(reply, "error", `stream failed: ${run.error.error}: ${run.error.message}`);
  } else if (!run.done) {
    settle(reply, "error");
    addMark(reply, "error", "stream cut: the connection closed before the reply was complete");
  } else {
    settle(reply, "done");
  }
  showMeta(reply, run, endedAt);
  if (run.text) state.history.push({ role: "assistant", content: run.text });
  else forget(turn, reply);
}

// A turn that got no reply is not part of the conversation sent next time.
function forget(turn, reply) {
  const at = state.history.lastIndexOf(turn);
  if (at >= 0) state.history.splice(at, 1);
  const user = reply.el.previousElementSibling;
  if (user && user.classList.contains("user")) {
    user.classList.add("unsent");
    user.title = "not part of the conversation: it got no reply";
  }
}

async function send(text) {
  const generation = state.generation;
  const turn = { role: "user", content: text };
  state.history.push(turn);
  addUserMessage(text);
  const reply = addReply();
  const controller = new AbortController();
  state.controller = controller;
  setBusy(true);
  const run = { startedAt: performance.now(), firstAt: null, text: "", deltas: 0, done: null, error: null };
  try {
    const response = await fetch("/api/chat", {
      method: "POST",
      headers: requestHeaders(),
      body: JSON.stringify(requestBody()),
      signal: controller.signal,
    });
    if (!response.ok) {
      failReply(reply, await httpErrorText(response));
      if (response.status === 401) $("key-box").open = true;
      forget(turn, reply);
      return;
    }
    run.worker = response.headers.get("X-Cortex-Worker");
    run.model = response.headers.get("X-Cortex-Model");
    run.attempts = Number(response.headers.get("X-Cortex-Attempts")) || null;
    await readStream(response, reply, run);
    if (generation === state.generation) finishRun(reply, run, turn);
  } catch (err) {
    if (generation !== state.generation) return;
    if (err.name === "AbortError") {
      settle(reply, "stopped");
      addMark(reply, "stopped", "stopped");
      showMeta(reply, run, performance.now());
      if (run.text) state.history.push({ role: "assistant", content: run.text });
      else forget(turn, reply);
    } else if (run.text) {
      // The connection broke under a reply that had started: keep what arrived, mark it.
      settle(reply, "error");
      addMark(reply, "error", `stream cut: the connection to the gateway broke (${err.message})`);
      showMeta(reply, run, performance.now());
      state.history.push({ role: "assistant", content: run.text });
    } else {
      failReply(reply, `Network error: could not reach the gateway (${err.message})`);
      forget(turn, reply);
    }
  } finally {
    if (state.controller === controller) {
      state.controller = null;
      setBusy(false);
      if ([document.body, $("send"), $("stop")].includes(document.activeElement)) $("prompt").focus();
    }
    refreshHealth();
  }
}

function stop() {
  if (state.controller) state.controller.abort();
}

function clearConversation() {
  stop();
  state.generation += 1;
  state.history = [];
  conversation().replaceChildren($("empty-hint"));
  $("empty-hint").hidden = false;
  $("prompt").focus();
}

// --- wiring ----------------------------------------------------------------------------------

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || state.controller) return;
  $("prompt").value = "";
  send(text);
});
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && state.controller) stop();
});
$("stop").addEventListener("click", () => {
  stop();
  $("prompt").focus();
});
$("clear").addEventListener("click", clearConversation);
$("prompt").focus();
