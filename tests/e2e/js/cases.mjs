// Drives the unmodified @fal-ai/client against a pulid-server; run by tests/e2e/test_fal_js_client.py.
//   node cases.mjs <case> '<json args>'   env: PULID_URL, FAL_KEY, FAL_ROUTE=proxy|fetch
// Prints one JSON line with what the client returned (or the error it threw).
import { readFileSync } from "node:fs";
import { ApiError, ValidationError, createFalClient } from "@fal-ai/client";

const BASE = process.env.PULID_URL;
const ROUTE = process.env.FAL_ROUTE;
const [caseName, rawArgs] = process.argv.slice(2);
const args = JSON.parse(rawArgs ?? "{}");

// The JS client has no host setting: it always builds https://{queue.,}fal.run/... and https://rest.fal.ai/...
const HOSTS = [
  ["https://queue.fal.run/", `${BASE}/queue/`],
  ["https://fal.run/", `${BASE}/run/`],
  ["https://rest.fal.ai/", `${BASE}/rest/`],
];
const rewrite = (url) => {
  for (const [from, to] of HOSTS) if (url.startsWith(from)) return to + url.slice(from.length);
  return url;
};

// Every request the client makes, as "METHOD url [-> x-fal-target-url]", so tests can see the route taken.
const requests = [];
const urlOf = (input) => (typeof input === "string" || input instanceof URL ? String(input) : input.url);
const recorded = (url, init) => {
  const target = new Headers(init?.headers).get("x-fal-target-url");
  requests.push(`${init?.method ?? "GET"} ${url}${target ? ` -> ${target}` : ""}`);
  return fetch(url, init);
};

function makeClient() {
  const credentials = process.env.FAL_KEY;
  if (ROUTE === "proxy") {
    const proxyUrl = { url: `${BASE}/api/fal/proxy`, when: "always" };
    return createFalClient({ credentials, proxyUrl, fetch: (input, init) => recorded(urlOf(input), init) });
  }
  if (ROUTE === "fetch") return createFalClient({ credentials, fetch: (input, init) => recorded(rewrite(urlOf(input)), init) });
  throw new Error(`FAL_ROUTE must be proxy or fetch, not ${ROUTE}`);
}

const fal = makeClient();
const summary = (s) => ({ status: s.status, position: s.queue_position ?? null, logs: s.logs ? s.logs.map((l) => l.message) : null });
const faceBlob = (path) => new Blob([readFileSync(path)], { type: "image/png" });

function describeError(err) {
  if (!(err instanceof ApiError)) throw err;
  return {
    name: err.name,
    isValidationError: err instanceof ValidationError,
    status: err.status,
    body: err.body,
    requestId: err.requestId,
    fieldErrors: err instanceof ValidationError ? err.fieldErrors : null,
  };
}

// A Blob for the endpoint's reference image (auto-uploaded by the client): fal-ai/pulid takes a list of
// {image_url}, fal-ai/flux-pulid one reference_image_url.
function withFace(input, facePath) {
  if (!facePath) return input;
  const blob = faceBlob(facePath);
  return "reference_image_url" in input ? { ...input, reference_image_url: blob } : { ...input, reference_images: [{ image_url: blob }] };
}

async function subscribe({ endpoint, input, mode, facePath }) {
  input = withFace(input, facePath);
  const updates = [];
  let enqueued = null;
  const result = await fal.subscribe(endpoint, {
    input,
    mode,
    logs: true,
    pollInterval: 100,
    onEnqueue: (id) => (enqueued = id),
    onQueueUpdate: (s) => updates.push(summary(s)),
  });
  return { data: result.data, requestId: result.requestId, enqueued, updates };
}

async function queue({ endpoint, input }) {
  const submitted = await fal.queue.submit(endpoint, { input });
  const id = submitted.request_id;
  const first = await fal.queue.status(endpoint, { requestId: id, logs: true });
  let last = first;
  for (let i = 0; i < 600 && last.status !== "COMPLETED"; i++) {
    await new Promise((r) => setTimeout(r, 50));
    last = await fal.queue.status(endpoint, { requestId: id, logs: true });
  }
  const result = await fal.queue.result(endpoint, { requestId: id });
  return { submitted, first: summary(first), last: summary(last), data: result.data, requestId: result.requestId };
}

async function cancel({ endpoint, input }) {
  const { request_id: id } = await fal.queue.submit(endpoint, { input });
  let status = await fal.queue.status(endpoint, { requestId: id });
  for (let i = 0; i < 600 && status.status === "IN_QUEUE"; i++) {
    await new Promise((r) => setTimeout(r, 50));
    status = await fal.queue.status(endpoint, { requestId: id });
  }
  const cancelled = await fal.queue.cancel(endpoint, { requestId: id });
  for (let i = 0; i < 600 && status.status !== "COMPLETED"; i++) {
    await new Promise((r) => setTimeout(r, 50));
    status = await fal.queue.status(endpoint, { requestId: id });
  }
  let resultError = null;
  try {
    await fal.queue.result(endpoint, { requestId: id });
  } catch (err) {
    resultError = describeError(err);
  }
  return { requestId: id, cancelled: cancelled ?? null, final: status, resultError };
}

async function run({ endpoint, input, facePath }) {
  const result = await fal.run(endpoint, { input: withFace(input, facePath) });
  return { data: result.data, requestId: result.requestId };
}

async function upload({ facePath }) {
  return { url: await fal.storage.upload(faceBlob(facePath)) };
}

async function invalid({ endpoint, input }) {
  try {
    await fal.queue.submit(endpoint, { input });
  } catch (err) {
    return describeError(err);
  }
  throw new Error("expected a ValidationError");
}

// A request that completes with an error: what subscribe() throws.
async function failing({ endpoint, input }) {
  try {
    await fal.subscribe(endpoint, { input, pollInterval: 100 });
  } catch (err) {
    return describeError(err);
  }
  throw new Error("expected the request to fail");
}

// fal's platform options as the client sends them: an upload's lifecycle, a runner hint, the outputs'
// lifetime (storageSettings) and X-Fal-Store-IO: 0 (a custom header), whose result is gone once delivered.
async function platform({ endpoint, input, facePath }) {
  const url = await fal.storage.upload(faceBlob(facePath), { lifecycle: { expiresIn: "1h" } });
  const result = await fal.subscribe(endpoint, {
    input,
    hint: "face-1",
    storageSettings: { expiresIn: 3600 },
    headers: { "X-Fal-Store-IO": "0" },
    pollInterval: 100,
  });
  let again = null;
  for (let i = 0; i < 100 && again === null; i++) {
    await new Promise((r) => setTimeout(r, 100));
    try {
      await fal.queue.result(endpoint, { requestId: result.requestId });
    } catch (err) {
      again = describeError(err);
    }
  }
  return { url, data: result.data, requestId: result.requestId, again };
}

const CASES = { subscribe, queue, cancel, run, upload, invalid, failing, platform };
if (!CASES[caseName]) throw new Error(`unknown case ${caseName}`);
console.log(JSON.stringify({ ...(await CASES[caseName](args)), requests }));
