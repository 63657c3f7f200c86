// This browser's requests, newest first, in localStorage: inputs, final state and results.

const STORAGE_KEY = "pulid.playground.history.v1";
const MAX_ENTRIES = 50;
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
        this.storage.setItem(STORAGE_KEY, JSON.stringify(list.slice(0, keep)));
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
