// HTTP calls to our own API: storage uploads, queue submit, SSE status stream, result, cancel.
// Every call carries `Authorization: Key <key>`; errors become ApiError with the parsed body.

export class ApiError extends Error {
  constructor(status, body, message) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

// The app part of a request URL is owner/alias (fal-protocol §4.1), never the sub-path.
export function appOf(endpointId) {
  return endpointId.split("/").slice(0, 2).join("/");
}

// JSON with integers beyond 2^53 kept exact: callers pass them as BigInt.
export function toJson(value, indent) {
  const marks = [];
  const text = JSON.stringify(
    value,
    (_k, v) => (typeof v === "bigint" ? `\u0000big${marks.push(v.toString()) - 1}\u0000` : v),
    indent,
  );
  return text.replace(/"\\u0000big(\d+)\\u0000"/g, (_m, i) => marks[Number(i)]);
}

function messageOf(status, body) {
  const detail = body && typeof body === "object" ? body.detail ?? body.status : body;
  if (Array.isArray(detail)) return detail.map((d) => d.msg).join("; ");
  return detail ? String(detail) : `HTTP ${status}`;
}

export class Api {
  constructor(getKey) {
    this.getKey = getKey;
  }

  headers(extra = {}) {
    return { Authorization: `Key ${this.getKey()}`, ...extra };
  }

  async call(method, path, { json, signal } = {}) {
    const init = { method, headers: this.headers(), signal };
    if (json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = toJson(json);
    }
    const response = await fetch(path, init);
    const text = await response.text();
    let body = text;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      /* not JSON: keep the text */
    }
    if (!response.ok) throw new ApiError(response.status, body, messageOf(response.status, body));
    return { body, text, response };
  }

  // Storage API (fal-protocol §7.1): initiate, then a raw PUT of the bytes to upload_url.
  async upload(file, signal) {
    const contentType = file.type || "application/octet-stream";
    const { body } = await this.call("POST", "/rest/storage/upload/initiate", {
      json: { content_type: contentType, file_name: file.name || "face" },
      signal,
    });
    const put = await fetch(body.upload_url, { method: "PUT", headers: { "Content-Type": contentType }, body: file, signal });
    if (!put.ok) throw new ApiError(put.status, null, `Upload failed: HTTP ${put.status}`);
    return body.file_url;
  }

  async submit(endpointId, input) {
    return (await this.call("POST", `/queue/${endpointId}`, { json: input })).body;
  }

  requestPath(endpointId, requestId, suffix = "") {
    return `/queue/${appOf(endpointId)}/requests/${encodeURIComponent(requestId)}${suffix}`;
  }

  async status(endpointId, requestId) {
    return (await this.call("GET", this.requestPath(endpointId, requestId, "/status?logs=1"))).body;
  }

  // The result of a finished request: {ok, status, body, text}. Failed requests answer with their error.
  async result(endpointId, requestId) {
    try {
      const { body, text, response } = await this.call("GET", this.requestPath(endpointId, requestId));
      return { ok: true, status: response.status, body, text };
    } catch (err) {
      if (err instanceof ApiError) return { ok: false, status: err.status, body: err.body, text: "" };
      throw err;
    }
  }

  async cancel(endpointId, requestId) {
    try {
      return (await this.call("PUT", this.requestPath(endpointId, requestId, "/cancel"))).body;
    } catch (err) {
      if (err instanceof ApiError && err.status === 400) return err.body; // ALREADY_COMPLETED
      throw err;
    }
  }

  // The SSE status stream read with fetch(): EventSource cannot send the Authorization header.
  // Calls onEvent(status) per `data:` event; resolves with the last event when the server closes.
  async stream(endpointId, requestId, onEvent, signal) {
    const path = this.requestPath(endpointId, requestId, "/status/stream?logs=1");
    const response = await fetch(path, { headers: this.headers({ Accept: "text/event-stream" }), signal });
    if (!response.ok) {
      const text = await response.text();
      let body = text;
      try { body = JSON.parse(text); } catch { /* keep text */ }
      throw new ApiError(response.status, body, messageOf(response.status, body));
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let last = null;
    for (;;) {
      const { value, done } = await reader.read();
      buffer += decoder.decode(value ?? new Uint8Array(), { stream: !done });
      const events = buffer.split(/\r?\n\r?\n/);
      buffer = done ? "" : events.pop();
      for (const event of events) {
        const data = parseEvent(event);
        if (data !== null) {
          last = data;
          onEvent(data);
        }
      }
      if (done) return last;
    }
  }
}

// One SSE event: the `data:` lines joined; comments (`: keepalive`) and other fields ignored.
export function parseEvent(event) {
  const lines = event.split(/\r?\n/).filter((l) => l.startsWith("data:"));
  if (!lines.length) return null;
  const data = lines.map((l) => l.slice(5).replace(/^ /, "")).join("\n");
  return JSON.parse(data);
}

// Progress from a `step k/N` log line, or null.
export function parseStep(message) {
  const m = /\bstep\s+(\d+)\s*\/\s*(\d+)/i.exec(message || "");
  return m ? { step: Number(m[1]), total: Number(m[2]) } : null;
}
