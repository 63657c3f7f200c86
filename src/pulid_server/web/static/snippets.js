// The API tab: the current form's exact request as curl, Python (ours and fal-client) and JavaScript.
// Keys come from the environment in every snippet, so nothing secret lands on screen or in a clipboard.

import { toJson } from "./api.js";

function shellQuote(text) {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

// A Python literal for JSON data (JSON strings are valid Python string literals).
export function pythonLiteral(value, indent = 0) {
  const pad = " ".repeat(indent + 4);
  const end = " ".repeat(indent);
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "bigint") return value.toString();
  if (typeof value === "number" || typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) {
    if (!value.length) return "[]";
    return `[\n${value.map((v) => pad + pythonLiteral(v, indent + 4)).join(",\n")},\n${end}]`;
  }
  const entries = Object.entries(value);
  if (!entries.length) return "{}";
  return `{\n${entries.map(([k, v]) => `${pad}${JSON.stringify(k)}: ${pythonLiteral(v, indent + 4)}`).join(",\n")},\n${end}}`;
}

function indentJson(input, spaces) {
  return toJson(input, 2).replace(/\n/g, `\n${" ".repeat(spaces)}`);
}

export function curlSnippet(base, endpointId, input) {
  return [
    `# export PULID_KEY=key_id:secret`,
    `curl -sS -X POST ${shellQuote(`${base}/queue/${endpointId}`)} \\`,
    `  -H "Authorization: Key $PULID_KEY" \\`,
    `  -H "Content-Type: application/json" \\`,
    `  -d ${shellQuote(toJson(input, 2))}`,
    ``,
    `# Then follow the returned status_url (add ?logs=1 for logs) until "status" is "COMPLETED",`,
    `# and GET the response_url for the result, with the same Authorization header.`,
  ].join("\n");
}

export function pythonSnippet(base, endpointId, input) {
  return [
    `import os`,
    ``,
    `from pulid_server.client import SyncClient`,
    ``,
    `client = SyncClient(url=${JSON.stringify(base)}, key=os.environ["PULID_KEY"])`,
    `result = client.subscribe(`,
    `    ${JSON.stringify(endpointId)},`,
    `    arguments=${pythonLiteral(input, 4)},`,
    `    with_logs=True,`,
    `)`,
    `print(result)`,
  ].join("\n");
}

export function falClientSnippet(base, endpointId, input) {
  const ws = base.replace(/^http/, "ws");
  return [
    `# pip install fal-client; export FAL_KEY=key_id:secret`,
    `import fal_client`,
    `import fal_client.client as c`,
    ``,
    `# Point the official client at this server (set these before the first call or upload).`,
    `B = ${JSON.stringify(base)}`,
    `c.RUN_URL_FORMAT = B + "/run/"`,
    `c.QUEUE_URL_FORMAT = B + "/queue/"`,
    `c.REALTIME_URL_FORMAT = ${JSON.stringify(`${ws}/run/`)}`,
    `c.REST_URL = B + "/rest"`,
    `c.CDN_URL = B + "/cdn"`,
    ``,
    `result = fal_client.subscribe(`,
    `    ${JSON.stringify(endpointId)},`,
    `    arguments=${pythonLiteral(input, 4)},`,
    `    with_logs=True,`,
    `)`,
    `print(result)`,
  ].join("\n");
}

export function jsSnippet(base, endpointId, input) {
  return [
    `// npm install @fal-ai/client; export PULID_KEY=key_id:secret`,
    `import { createFalClient } from "@fal-ai/client";`,
    ``,
    `const fal = createFalClient({`,
    `  credentials: process.env.PULID_KEY,`,
    `  proxyUrl: { url: ${JSON.stringify(`${base}/api/fal/proxy`)}, when: "always" },`,
    `});`,
    ``,
    `const result = await fal.subscribe(${JSON.stringify(endpointId)}, {`,
    `  input: ${indentJson(input, 2)},`,
    `  logs: true,`,
    `  onQueueUpdate: (update) => console.log(update.status),`,
    `});`,
    `console.log(result.data);`,
  ].join("\n");
}

export const SNIPPETS = [
  { id: "curl", title: "curl", lang: "shell", make: curlSnippet },
  { id: "python", title: "Python · pulid_server.client", lang: "python", make: pythonSnippet },
  { id: "fal-client", title: "Python · fal-client", lang: "python", make: falClientSnippet },
  { id: "javascript", title: "JavaScript · @fal-ai/client", lang: "javascript", make: jsSnippet },
];
