// The result panel: status line (live region), queue position, progress bar from `step k/N` logs,
// logs, error box, and the gallery with size, seed and download links.

import { parseStep } from "./api.js";
import { $, h, show } from "./dom.js";

const BADGES = {
  SUBMITTING: "Submitting", IN_QUEUE: "Queued", IN_PROGRESS: "Running",
  COMPLETED: "Done", FAILED: "Failed", CANCELLED: "Cancelled",
};

const ERROR_TITLES = {
  no_face: "No face found in a reference image",
  request_cancelled: "Cancelled",
  request_timeout: "The request timed out before it started",
  internal_error: "The server failed to run this request",
  out_of_memory: "The GPU ran out of memory",
};

// What one run looks like while it is followed: status, queue position, logs, progress.
export function liveState() {
  return { status: "SUBMITTING", position: null, logs: [], progress: null };
}

export function applyEvent(live, event) {
  if (event.status !== "COMPLETED") live.status = event.status; // the final state is set once the result is in
  if (event.status === "IN_QUEUE") live.position = event.queue_position ?? null;
  for (const log of event.logs || []) {
    live.logs.push(log);
    const step = parseStep(log.message);
    if (step) live.progress = step;
  }
}

// ["body", "reference_images", 0, "image_url"] -> "reference_images[0].image_url"
export function fieldPath(loc) {
  const parts = (loc || []).filter((p, i) => !(i === 0 && p === "body"));
  return parts.reduce((path, p) => (typeof p === "number" ? `${path}[${p}]` : path ? `${path}.${p}` : p), "") || "body";
}

export function errorTitle(errorType) {
  return ERROR_TITLES[errorType] || `The request failed${errorType ? ` (${errorType})` : ""}`;
}

export class OutputView {
  constructor(root, handlers) {
    this.root = root;
    this.handlers = handlers; // {cancel(), useSeed(seed), runAgain(entry)}
    this.el = {
      badge: $("#run-badge", root), status: $("#run-status", root), progressBox: $("#run-progress", root),
      progress: $("#progress-bar", root), progressLabel: $("#progress-label", root), cancel: $("#cancel", root),
      error: $("#run-error", root), gallery: $("#gallery", root), actions: $("#result-actions", root),
      meta: $("#run-meta", root), runAgain: $("#run-again", root), logs: $("#logs", root), logsCount: $("#logs-count", root),
    };
    this.el.cancel.addEventListener("click", () => this.handlers.cancel());
    this.el.runAgain.addEventListener("click", () => this.entry && this.handlers.runAgain(this.entry));
    this.lastStatusText = "";
  }

  setStatus(text) {
    if (text !== this.lastStatusText) this.el.status.textContent = text; // avoid re-announcing
    this.lastStatusText = text;
  }

  setBadge(status) {
    show(this.el.badge, Boolean(status));
    this.el.badge.textContent = BADGES[status] || status || "";
    this.el.badge.dataset.status = status || "";
  }

  clear(message = "") {
    this.entry = null;
    this.setBadge(null);
    this.setStatus(message);
    show(this.el.progressBox, false);
    show(this.el.error, false);
    show(this.el.actions, false);
    this.el.gallery.replaceChildren();
    this.el.logs.textContent = "";
    this.el.logsCount.textContent = "";
  }

  // A run in flight (live state) or a finished history entry.
  render(entry, live) {
    this.entry = entry;
    const status = live ? live.status : entry.status;
    this.setBadge(status);
    this.renderLogs(live ? live.logs : entry.logs || []);
    if (live && !["COMPLETED", "FAILED", "CANCELLED"].includes(status)) return this.renderLive(live);
    show(this.el.progressBox, false);
    this.renderFinal(entry);
  }

  renderLive(live) {
    show(this.el.progressBox, true);
    show(this.el.error, false);
    show(this.el.actions, false);
    this.el.gallery.replaceChildren();
    this.el.cancel.disabled = Boolean(live.cancelling);
    this.el.cancel.textContent = live.cancelling ? "Cancelling…" : "Cancel";
    const bar = this.el.progress;
    if (live.status === "IN_PROGRESS" && live.progress) {
      bar.max = live.progress.total;
      bar.value = live.progress.step;
      this.el.progressLabel.textContent = `Step ${live.progress.step} of ${live.progress.total}`;
      this.setStatus(`Generating… step ${live.progress.step} of ${live.progress.total}`);
    } else {
      bar.removeAttribute("value"); // indeterminate
      const queued = live.status === "IN_QUEUE";
      this.el.progressLabel.textContent = queued ? "Waiting in the queue" : live.status === "SUBMITTING" ? "Submitting" : "Starting";
      this.setStatus(queued ? queueText(live.position) : live.status === "SUBMITTING" ? "Uploading faces and submitting…" : "Starting…");
    }
  }

  renderFinal(entry) {
    const failed = entry.status === "FAILED" || entry.status === "CANCELLED";
    show(this.el.error, failed);
    if (failed) {
      const err = entry.error || {};
      this.el.error.dataset.errorType = err.error_type || "";
      const lines = (err.detail || []).filter((d) => d.msg).map((d) => `${fieldPath(d.loc)}: ${d.msg}`);
      const said = lines.some((line) => line === err.message || line.endsWith(`: ${err.message}`));
      const message = said ? "" : err.message; // the field's line below says it already
      this.el.error.replaceChildren(
        h("strong", {}, errorTitle(err.error_type)),
        message && err.error_type !== "request_cancelled" ? h("p", {}, message) : null,
        ...lines.map((line) => h("p", {}, line)),
        err.error_type && err.error_type !== "request_cancelled" ? h("p.hint", {}, "error_type: ", h("code", {}, err.error_type)) : null);
      this.setStatus(entry.status === "CANCELLED" ? "Request cancelled." : "Request failed.");
    }
    const images = entry.result?.images || [];
    this.el.gallery.replaceChildren(...images.map((img, i) => this.shot(entry, img, i, images.length)));
    const done = entry.status === "COMPLETED";
    show(this.el.actions, done || failed);
    const seed = entry.seed_text ?? entry.result?.seed;
    const parts = [
      seed !== undefined ? h("span", {}, "Seed ", h("code", { dataset: { seed: String(seed) } }, String(seed)), " ",
        h("button.linkish", { type: "button", onclick: () => this.handlers.useSeed(String(seed)) }, "Use this seed")) : null,
      entry.inference_time != null ? h("span", {}, `${entry.inference_time.toFixed(2)} s inference`) : null,
    ].filter(Boolean);
    this.el.meta.replaceChildren(...parts.flatMap((part, i) => (i ? [" · ", part] : [part])));
    if (done) this.setStatus(`Done: ${images.length} image${images.length === 1 ? "" : "s"}${entry.elapsed != null ? ` in ${entry.elapsed.toFixed(1)} s` : ""}.`);
  }

  shot(entry, img, i, count) {
    if (!img.url) return h("li.shot", {}, h("p.hint", {}, `Image ${i + 1} came inline (sync_mode) and was too big to keep in this browser's history.`));
    const size = h("span.size", {}, img.width && img.height ? `${img.width} × ${img.height}` : "");
    const pic = h("img", { src: img.url, alt: `Generated image ${i + 1} of ${count}`, decoding: "async",
      width: img.width || undefined, height: img.height || undefined });
    pic.addEventListener("load", () => {
      if (!size.textContent) size.textContent = `${pic.naturalWidth} × ${pic.naturalHeight}`;
      pic.classList.toggle("tiny", pic.naturalWidth < 256); // toy-model outputs: show pixels, not blur
    });
    const name = img.file_name || `pulid-${entry.request_id.slice(0, 8)}-${i + 1}.png`;
    return h("li.shot", {},
      h("a.frame", { href: img.url, target: "_blank", rel: "noopener", "aria-label": `Open image ${i + 1} full size` }, pic),
      h("div.shot-meta", {}, size,
        h("a.button.small", { href: img.url, download: name, "aria-label": `Download image ${i + 1}` }, "Download")));
  }

  renderLogs(logs) {
    this.el.logs.textContent = logs.map((l) => `${(l.timestamp || "").slice(11, 23)}  ${l.level || ""}  ${l.message}`).join("\n");
    this.el.logsCount.textContent = logs.length ? `(${logs.length})` : "";
    this.el.logs.scrollTop = this.el.logs.scrollHeight;
  }
}

function queueText(position) {
  if (position === null || position === undefined) return "In the queue…";
  // queue_position counts the requests ahead of this one.
  return position === 0 ? "In the queue (position 0): next up." : `In the queue (position ${position}): ${position} ahead.`;
}
