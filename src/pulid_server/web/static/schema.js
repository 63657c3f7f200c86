// Reads an endpoint's input schema from /openapi.json and describes each property as a form field.
// Nothing about fal-ai/pulid is hard-coded here: the form follows whatever the API publishes.

export async function loadOpenApi() {
  const response = await fetch("/openapi.json");
  if (!response.ok) throw new Error(`GET /openapi.json failed: HTTP ${response.status}`);
  return response.json();
}

// The endpoint ids the API publishes (each has a POST /queue/{id}).
export function listEndpoints(openapi) {
  return Object.keys(openapi.paths || {})
    .filter((path) => path.startsWith("/queue/") && !path.includes("{") && openapi.paths[path].post)
    .map((path) => path.slice("/queue/".length));
}

export function inputSchema(openapi, endpointId) {
  const post = openapi.paths?.[`/queue/${endpointId}`]?.post;
  const ref = post?.requestBody?.content?.["application/json"]?.schema;
  if (!ref) throw new Error(`/openapi.json has no POST /queue/${endpointId}`);
  const root = resolve(openapi, ref);
  const required = new Set(root.required || []);
  const fields = Object.entries(root.properties || {}).map(([name, prop]) =>
    describe(openapi, name, prop, required.has(name)),
  );
  return { title: root.title || endpointId, fields };
}

export function resolve(openapi, schema) {
  let s = schema;
  for (let i = 0; s && s.$ref && i < 16; i++) {
    const path = s.$ref.replace(/^#\//, "").split("/");
    s = path.reduce((node, key) => node?.[key], openapi);
  }
  if (s && Array.isArray(s.allOf) && s.allOf.length === 1) return { ...resolve(openapi, s.allOf[0]), ...omit(s, "allOf") };
  return s || {};
}

function omit(obj, key) {
  const { [key]: _drop, ...rest } = obj;
  return rest;
}

export function labelOf(name, prop) {
  const title = prop.title || name.replace(/_/g, " ").replace(/^\w/, (c) => c.toUpperCase());
  return title.replace(/\bId\b/g, "ID").replace(/\bUrl\b/g, "URL").replace(/\bCfg\b/g, "CFG").replace(/^Num /, "Number of ");
}

function numeric(s) {
  return s.type === "integer" || s.type === "number";
}

function bounds(s) {
  return {
    numberType: s.type,
    minimum: s.minimum ?? (s.exclusiveMinimum !== undefined ? s.exclusiveMinimum : undefined),
    maximum: s.maximum ?? (s.exclusiveMaximum !== undefined ? s.exclusiveMaximum : undefined),
    multipleOf: s.multipleOf,
  };
}

// One form field: {name, kind, label, description, required, default, ...kind-specific}.
function describe(openapi, name, prop, required) {
  const base = { name, label: labelOf(name, prop), description: prop.description || "", required, default: prop.default };
  const s = resolve(openapi, prop);
  const branches = (s.anyOf || s.oneOf || []).map((b) => resolve(openapi, b));
  if (branches.length) {
    const nonNull = branches.filter((b) => b.type !== "null");
    const nullable = nonNull.length < branches.length;
    const choice = nonNull.find((b) => Array.isArray(b.enum));
    const object = nonNull.find((b) => b.type === "object" && b.properties);
    if (nonNull.length === 1 && numeric(nonNull[0])) return { ...base, kind: "number", nullable, ...bounds(nonNull[0]) };
    if (nonNull.length === 1 && Array.isArray(nonNull[0].enum)) return { ...base, kind: "enum", nullable, options: nonNull[0].enum };
    if (nonNull.length === 1 && nonNull[0].type === "string") return { ...base, kind: "text", nullable, ...strBounds(nonNull[0]) };
    if (choice && object && nonNull.length === 2) return { ...base, kind: "choice-or-object", options: choice.enum, object: objectFields(openapi, object) };
    return { ...base, kind: "json" };
  }
  if (Array.isArray(s.enum)) return { ...base, kind: "enum", options: s.enum };
  if (numeric(s)) return { ...base, kind: "number", nullable: false, ...bounds(s) };
  if (s.type === "boolean") return { ...base, kind: "boolean" };
  // One image URL (fal-ai/flux-pulid's reference_image_url): the picker, holding a single image.
  if (s.type === "string" && /image_url$/.test(name)) return { ...base, kind: "images", single: true, minItems: required ? 1 : 0, maxItems: 1 };
  if (s.type === "string") return { ...base, kind: "text", ...strBounds(s) };
  if (s.type === "array") {
    const item = resolve(openapi, s.items || {});
    const keys = Object.keys(item.properties || {});
    if (item.type === "object" && keys.length === 1 && /url$/.test(keys[0])) {
      return { ...base, kind: "images", itemKey: keys[0], minItems: s.minItems ?? 0, maxItems: s.maxItems ?? 16 };
    }
  }
  return { ...base, kind: "json" };
}

function strBounds(s) {
  return { minLength: s.minLength, maxLength: s.maxLength };
}

function objectFields(openapi, object) {
  return Object.entries(object.properties).map(([name, prop]) => {
    const s = resolve(openapi, prop);
    return { name, label: labelOf(name, prop), description: prop.description || "", default: prop.default, ...bounds(s) };
  });
}

// The default a field starts with. A union without a schema default starts as its object, filled with
// the object's own property defaults (fal documents image_size's default that way).
export function defaultOf(field) {
  if (field.default !== undefined) return field.default;
  if (field.kind === "choice-or-object") return Object.fromEntries(field.object.map((f) => [f.name, f.default]));
  if (field.kind === "images") return field.single ? undefined : [];
  if (field.kind === "boolean") return false;
  return undefined;
}
