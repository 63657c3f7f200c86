// This browser's requests, newest first, in localStorage: inputs, final state and results.

const STORAGE_KEY = "pulid.playground.history.v1";
const MAX_ENTRIES = 50;
// sync_mode outputs are data: URIs inside the result; big ones are not kept (localStorage holds ~5 MB).
const MAX_INLINE_URL = 256 * 1024;
export const FINAL = new Set(["COMPLETED", "FAILED", "CANCELLED"]);

export class History {
  constructor(storage = window.localStorage) {
    this.storage = storage;
  }

  all() {
    try {
      const list = JSON.parse(this.storage.getItem(STORAGE_KEY) || "[]");
      return Array.isArray(list) ? list : [];
    } catch {
      return [];
    }
  }

  get(requestId) {
    return this.all().find((e) => e.request_id === requestId);
  }

  write(list) {
    // Drop the oldest entries until it fits (a full localStorage throws).
    for (let keep = Math.min(list.length, MAX_ENTRIES); keep >= 0; keep--) {
      try {
        this.storage.setItem(STORAGE_KEY, JSON.stringify(list.slice(0, keep).map(compact)));
        return;
      } catch {
        /* quota: keep fewer */
      }
    }
  }

  add(entry) {
    this.write([entry, ...this.all().filter((e) => e.request_id !== entry.request_id)]);
  }

  update(requestId, patch) {
    const list = this.all();
    const entry = list.find((e) => e.request_id === requestId);
    if (!entry) return undefined;
    Object.assign(entry, patch);
    this.write(list);
    return entry;
  }

  remove(requestId) {
    this.write(this.all().filter((e) => e.request_id !== requestId));
  }

  clear() {
    this.storage.removeItem(STORAGE_KEY);
  }
}

// An entry without its big inline images (their url becomes null: the result panel says so).
function compact(entry) {
  const images = entry.result?.images;
  const big = (image) => typeof image?.url === "string" && image.url.startsWith("data:") && image.url.length > MAX_INLINE_URL;
  if (!Array.isArray(images) || !images.some(big)) return entry;
  return { ...entry, result: { ...entry.result, images: images.map((i) => (big(i) ? { ...i, url: null } : i)) } };
}
