// The playground: wires the key box, tabs, schema-built form, queue runs, results, history and snippets.

import { Api, ApiError } from "./api.js";
import { $, h } from "./dom.js";
import { InputForm } from "./form.js";
import { FINAL, History } from "./history.js";
import { applyEvent, errorTitle, liveState, OutputView } from "./output.js";
import { inputSchema, listEndpoints, loadOpenApi } from "./schema.js";
import { SNIPPETS } from "./snippets.js";

const KEY_STORAGE = "pulid.playground.key";
const STREAM_ATTEMPTS = 30;
const params = new URLSearchParams(location.search);
const endpointId = params.get("endpoint") || "fal-ai/pulid";

const state = { form: null, active: null, shown: null }; // active: {entry, live, controller}
const api = new Api(() => $("#api-key").value.trim());
const history = new History();
const output = new OutputView($("#panel-generate"), {
  cancel: () => cancelActive(),
  useSeed: (seed) => useSeed(seed),
  runAgain: (entry) => { state.form.setValues(entry.input); start(); },
});

// -- API key ----------------------------------------------------------------------------------------

function setupKey() {
  const input = $("#api-key");
  input.value = localStorage.getItem(KEY_STORAGE) || "";
  input.addEventListener("change", () => {
    localStorage.setItem(KEY_STORAGE, input.value.trim());
    keyError("");
    state.form?.picker?.uploadPending();
  });
  $("#key-form").addEventListener("submit", (e) => e.preventDefault());
  $("#key-toggle").addEventListener("click", (e) => {
    const showing = input.type === "text";
    input.type = showing ? "password" : "text";
    e.currentTarget.setAttribute("aria-pressed", String(!showing));
    e.currentTarget.setAttribute("aria-label", showing ? "Show API key" : "Hide API key");
    e.currentTarget.textContent = showing ? "Show" : "Hide";
  });
  $("#key-forget").addEventListener("click", () => {
    input.value = "";
    localStorage.removeItem(KEY_STORAGE);
    keyError("");
    input.focus();
  });
}

function keyError(message) {
  $("#key-error").textContent = message;
  $("#api-key").toggleAttribute("aria-invalid", Boolean(message));
}

// -- tabs -------------------------------------------------------------------------------------------

function setupTabs() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const select = (tab) => {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute("aria-selected", String(on));
      t.tabIndex = on ? 0 : -1;
      $(`#${t.getAttribute("aria-controls")}`).hidden = !on;
    }
    if (tab.id === "tab-api") renderSnippets();
    if (tab.id === "tab-history") renderHistory();
  };
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (e) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
      if (!step) return;
      const next = tabs[(i + step + tabs.length) % tabs.length];
      next.focus();
      select(next);
    });
  });
  return (id) => select($(`#${id}`));
}
let selectTab = () => {};

// -- submit and follow a run -----------------------------------------------------------------------

function formError(message) {
  $("#form-error").textContent = message;
}

function setBusy(busy) {
  const button = $("#generate");
  button.disabled = busy || !state.form;
  button.textContent = busy ? "Running…" : "Generate";
}

async function start() {
  if (state.active) return;
  state.form.clearErrors();
  formError("");
  keyError("");
  if (!api.getKey()) {
    keyError("Enter your API key first.");
    $("#api-key").focus();
    return;
  }
  setBusy(true);
  const live = liveState();
  state.shown = null;
  output.clear();
  output.render({ request_id: "", status: "SUBMITTING" }, live);
  if (window.matchMedia("(max-width: 900px)").matches) $(".output").scrollIntoView({ behavior: "smooth", block: "start" });
  try {
    await state.form.picker?.ensureUploaded();
  } catch (err) {
    setBusy(false);
    output.clear("Upload failed.");
    return reportSubmitError(err, "reference images");
  }
  const input = state.form.request();
  let submitted;
  try {
    submitted = await api.submit(endpointId, input);
  } catch (err) {
    setBusy(false);
    output.clear("Not submitted.");
    return reportSubmitError(err);
  }
  const entry = {
    request_id: submitted.request_id, endpoint_id: endpointId, input, status: "IN_QUEUE",
    created_at: new Date().toISOString(), started: Date.now(),
  };
  history.add(entry);
  renderHistoryCount();
  follow(entry, live);
}

function reportSubmitError(err, what = "") {
  if (err instanceof ApiError && err.status === 401) {
    keyError(`The server rejected this key: ${err.message}`);
    $("#api-key").focus();
  } else if (err instanceof ApiError && err.status === 422) {
    const rest = state.form.showErrors(err.body?.detail);
    formError(rest.length ? rest.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("\n") : "Some inputs are not valid: see the marked fields.");
  } else if (err instanceof ApiError) {
    const hint = { 413: " (too large)", 429: " (the queue is full: try again shortly)" }[err.status] || "";
    formError(`${what ? `${what}: ` : ""}HTTP ${err.status}${hint}: ${err.message}`);
  } else {
    formError(`Cannot reach the server${what ? ` (${what})` : ""}: ${err.message}`);
  }
}

// Follow a request through the SSE stream until COMPLETED; reconnect (bounded) if the stream drops.
async function follow(entry, live) {
  const controller = new AbortController();
  state.active = { entry, live, controller };
  state.shown = entry.request_id;
  setBusy(true);
  const redraw = () => { if (state.shown === entry.request_id) output.render(entry, live); };
  redraw();
  let last = null;
  for (let attempt = 0; attempt < STREAM_ATTEMPTS && last?.status !== "COMPLETED"; attempt++) {
    if (attempt) await sleep(Math.min(500 * attempt, 5000));
    live.logs = []; // each connection replays the logs from the start
    try {
      last = await api.stream(entry.endpoint_id, entry.request_id, (event) => {
        applyEvent(live, event);
        if (event.status !== entry.status && event.status !== "COMPLETED") {
          entry.status = event.status;
          history.update(entry.request_id, { status: event.status });
        }
        redraw();
      }, controller.signal);
    } catch (err) {
      if (err instanceof ApiError && err.status < 500) return stopFollowing(entry, live, err);
    }
  }
  if (last?.status !== "COMPLETED") return stopFollowing(entry, live, new Error("Lost the status stream."));
  await finish(entry, live, last);
}

function stopFollowing(entry, live, err) {
  state.active = null;
  setBusy(false);
  const message = err instanceof ApiError && err.status === 401 ? `The server rejected this key: ${err.message}` : err.message;
  if (err instanceof ApiError && err.status === 401) keyError(message);
  output.setStatus(`Stopped following ${entry.request_id}: ${message} Open it from History to try again.`);
}

async function finish(entry, live, completed) {
  const patch = { logs: live.logs.slice(-200), inference_time: completed.metrics?.inference_time ?? null,
    elapsed: (Date.now() - (entry.started || Date.now())) / 1000 };
  const res = await api.result(entry.endpoint_id, entry.request_id).catch((err) => ({ ok: false, status: 0, body: { detail: err.message } }));
  if (!completed.error && res.ok) {
    const seed = /"seed"\s*:\s*(-?\d+)/.exec(res.text || "");
    Object.assign(patch, { status: "COMPLETED", result: res.body, seed_text: seed ? seed[1] : undefined, error: null });
  } else {
    const cancelled = completed.error_type === "request_cancelled";
    const detail = Array.isArray(res.body?.detail) ? res.body.detail : [];
    const message = completed.error || (typeof res.body?.detail === "string" ? res.body.detail : `HTTP ${res.status}`);
    Object.assign(patch, { status: cancelled ? "CANCELLED" : "FAILED", error: { message, error_type: completed.error_type || res.body?.error_type, detail } });
  }
  Object.assign(entry, patch);
  history.update(entry.request_id, patch);
  live.status = entry.status;
  state.active = null;
  setBusy(false);
  if (state.shown === entry.request_id) {
    output.render(entry, null);
    if (entry.status === "FAILED" && entry.error.detail.length) state.form.showErrors(entry.error.detail);
  }
  renderHistoryCount();
  showModelNotice(); // a worker may have (re)loaded since the page opened
}

async function cancelActive() {
  const run = state.active;
  if (!run) return;
  run.live.cancelling = true;
  output.render(run.entry, run.live);
  try {
    await api.cancel(run.entry.endpoint_id, run.entry.request_id);
  } catch (err) {
    run.live.cancelling = false;
    output.render(run.entry, run.live);
    output.setStatus(`Cancel failed: ${err.message}`);
  }
}

function useSeed(seed) {
  const control = state.form.controls.seed;
  if (!control) return;
  control.set(seed);
  selectTab("tab-generate");
  $("#in-seed")?.focus();
  output.setStatus(`Seed ${seed} set: the next run reuses it.`);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// -- model notice -----------------------------------------------------------------------------------

// A banner when the endpoint runs the tiny model (random weights: noise by design), as readiness reports it
// from what the workers loaded; the notice names the command that fixes it, shown as code. Until a worker
// has loaded the endpoint (a server just started), ask again now and then.
const NOTICE_CHECKS = 60;
const NOTICE_RECHECK_MS = 2000;

async function showModelNotice(checks = NOTICE_CHECKS) {
  let ready;
  try {
    ready = await (await fetch("/health/ready", { headers: { Accept: "application/json" } })).json();
  } catch {
    return; // readiness unreachable: keep what is shown
  }
  const notice = ready?.random_weights?.[endpointId] || "";
  const box = $("#model-notice");
  box.replaceChildren(...notice.split("`").map((part, i) => (i % 2 ? h("code", {}, part) : part)));
  box.hidden = !notice;
  if (!ready?.endpoints_ready?.includes(endpointId) && checks > 1) {
    setTimeout(() => showModelNotice(checks - 1), NOTICE_RECHECK_MS);
  }
}

// -- history ----------------------------------------------------------------------------------------

function renderHistoryCount() {
  const n = history.all().length;
  $("#history-count").textContent = n ? `(${n})` : "";
  if (!$("#panel-history").hidden) renderHistory();
}

function openEntry(requestId) {
  const entry = history.get(requestId);
  if (!entry) return;
  if (entry.endpoint_id && entry.endpoint_id !== endpointId) return showEndpoint(entry.endpoint_id, requestId); // its own form
  selectTab("tab-generate");
  state.form.setValues(entry.input);
  state.shown = entry.request_id;
  if (state.active?.entry.request_id === requestId) return output.render(state.active.entry, state.active.live);
  if (!FINAL.has(entry.status) && !state.active) return follow(entry, liveState());
  output.render(entry, null);
  if (!FINAL.has(entry.status)) output.setStatus("Still running: it resumes here when the current run ends. Open it again then.");
}

function renderHistory() {
  const list = $("#history-list");
  const entries = history.all();
  list.replaceChildren(...entries.map((entry) => historyItem(entry)));
  if (!entries.length) list.append(h("li.empty.hint", {}, "Nothing yet: requests you make here are remembered in this browser."));
}

// The first input image of a request (a list of {image_url} or one image URL), for its thumbnail.
function inputImage(input) {
  for (const [name, value] of Object.entries(input || {})) {
    if (typeof value === "string" && /image_url$/.test(name)) return value;
    if (Array.isArray(value) && typeof value[0]?.image_url === "string") return value[0].image_url;
  }
  return undefined;
}

function historyItem(entry) {
  const image = entry.result?.images?.[0]?.url || inputImage(entry.input);
  const when = new Date(entry.created_at).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
  const prompt = entry.input?.prompt || "(no prompt)";
  const status = entry.status === "FAILED" ? errorTitle(entry.error?.error_type) : entry.status.replace("_", " ").toLowerCase();
  return h("li.hist-item", { dataset: { requestId: entry.request_id, status: entry.status } },
    image ? h("img.hist-thumb", { src: image, alt: "", loading: "lazy" }) : h("span.hist-thumb"),
    h("div.hist-body", {},
      h("p.hist-prompt", {}, prompt),
      h("p.hint", {}, h("span.badge", { dataset: { status: entry.status } }, status), ` ${when} · ${entry.endpoint_id} · `, h("code", {}, entry.request_id.slice(0, 8)))),
    h("div.hist-actions", {},
      h("button", { type: "button", onclick: () => openEntry(entry.request_id), "aria-label": `Open request ${entry.request_id}` }, "Open"),
      h("button.ghost", { type: "button", "aria-label": `Delete request ${entry.request_id} from history`,
        onclick: () => { history.remove(entry.request_id); renderHistoryCount(); renderHistory(); } }, "Delete")));
}

// -- API tab ----------------------------------------------------------------------------------------

function renderSnippets() {
  if (!state.form) return;
  const input = state.form.request();
  const box = $("#snippets");
  box.replaceChildren(...SNIPPETS.map((s) => {
    const code = h("code", { className: `lang-${s.lang}` }, s.make(location.origin, endpointId, input));
    const copy = h("button.small", { type: "button", "aria-label": `Copy ${s.title} snippet` }, "Copy");
    copy.addEventListener("click", () => copyText(code.textContent, copy));
    return h("section.snippet", { dataset: { snippet: s.id } },
      h("div.snippet-head", {}, h("h3", {}, s.title), copy),
      h("pre", { tabindex: "0", "aria-label": `${s.title} snippet` }, code));
  }));
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    button.textContent = "Select and copy";
  }
  setTimeout(() => { button.textContent = "Copy"; }, 1500);
}

// -- endpoint picker ---------------------------------------------------------------------------------

// Each endpoint has its own form: switching loads the page for it (and, from the history, opens a request).
function showEndpoint(id, requestId) {
  const next = new URLSearchParams({ endpoint: id, ...(requestId ? { open: requestId } : {}) });
  location.search = `?${next}`;
}

function setupEndpointPicker(ids) {
  const select = $("#endpoint-select");
  const options = ids.includes(endpointId) ? ids : [endpointId, ...ids];
  select.replaceChildren(...options.map((id) => h("option", { value: id }, id)));
  select.value = endpointId;
  select.addEventListener("change", () => showEndpoint(select.value));
}

// -- start ------------------------------------------------------------------------------------------

async function main() {
  $("#origin").textContent = location.host;
  setupKey();
  selectTab = setupTabs();
  renderHistoryCount();
  showModelNotice();
  let schema;
  try {
    const openapi = await loadOpenApi();
    setupEndpointPicker(listEndpoints(openapi));
    schema = inputSchema(openapi, endpointId);
  } catch (err) {
    $("#fields").replaceChildren(h("p.form-error", { role: "alert" }, `Cannot build the form: ${err.message}`));
    return;
  }
  const fields = $("#fields");
  fields.replaceChildren();
  state.form = new InputForm(fields, schema.fields, api, () => { if (!$("#panel-api").hidden) renderSnippets(); });
  $("#input-form").addEventListener("submit", (e) => { e.preventDefault(); start(); });
  $("#reset").addEventListener("click", () => state.form.reset());
  $("#history-clear").addEventListener("click", () => { history.clear(); renderHistoryCount(); renderHistory(); });
  document.addEventListener("paste", (e) => {
    const files = [...(e.clipboardData?.files || [])];
    if (files.length && state.form.picker && !$("#panel-generate").hidden) state.form.picker.addFiles(files);
  });
  document.body.dataset.ready = "true";
  setBusy(false);
  const latest = history.all()[0];
  if (params.get("open")) { // a request picked in another endpoint's history; a reload stays on the form
    openEntry(params.get("open"));
    window.history.replaceState(null, "", `?${new URLSearchParams({ endpoint: endpointId })}`);
  }
  else if (latest && !FINAL.has(latest.status)) openEntry(latest.request_id); // resume a run left by a reload
}

main();
