// The reference-faces picker: drop, pick or paste 1..N images (uploaded through the storage API as soon
// as a key is known) or add image URLs. Thumbnails are shown and removable. A `single` field (one image
// URL, e.g. reference_image_url) holds one image: a new one replaces it, and its value is the URL itself.

import { h } from "./dom.js";

let nextId = 1;

export class FacePicker {
  constructor(field, api, onChange) {
    this.field = field;
    this.api = api;
    this.onChange = onChange;
    this.items = []; // {id, file?, preview, url?, status: "waiting"|"uploading"|"ready"|"error", error?}
    this.el = this.render();
  }

  render() {
    const f = this.field;
    const id = `in-${f.name}`;
    this.list = h("ul.thumbs", { "aria-label": `${f.label}: selected images` });
    this.fileInput = h("input.visually-hidden", {
      type: "file", id, name: f.name, accept: "image/*", multiple: !f.single,
      "aria-describedby": `${f.name}-hint ${f.name}-error`,
      onchange: () => { this.addFiles([...this.fileInput.files]); this.fileInput.value = ""; },
    });
    this.urlInput = h("input", { type: "url", id: `${id}-url`, name: `${f.name}-url`, placeholder: "https://…/face.jpg", inputmode: "url" });
    this.drop = h("div.dropzone", {},
      this.list,
      h("div.drop-cta", {},
        this.fileInput,
        h("label.button", { htmlFor: id }, f.single ? "Choose an image" : "Choose images"),
        h("span.hint", {}, f.single ? " or drop / paste it here" : " or drop / paste them here")));
    this.bindDrop(this.drop);
    const range = f.single ? "One image" : `${f.minItems === f.maxItems ? f.maxItems : `${f.minItems}–${f.maxItems}`} images`;
    const dataset = { field: f.name, kind: "images", minItems: f.minItems, maxItems: f.maxItems, ...(f.single ? { single: "true" } : { itemKey: f.itemKey }) };
    return h("fieldset.field.faces", { dataset },
      h("legend", {}, f.label, f.required ? h("span.req", { "aria-hidden": "true" }, " *") : null),
      this.drop,
      h("div.urlrow", {},
        h("label", { htmlFor: `${id}-url` }, "Image URL"),
        this.urlInput,
        h("button", { type: "button", onclick: () => this.addUrlFromInput() }, "Add URL")),
      h("p.hint", { id: `${f.name}-hint` }, `${range}. ${f.description}`),
      h("p.field-error", { id: `${f.name}-error` }));
  }

  bindDrop(zone) {
    zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      zone.classList.remove("over");
      const files = [...(e.dataTransfer?.files || [])];
      if (files.length) this.addFiles(files);
      else {
        const url = e.dataTransfer?.getData("text/uri-list") || e.dataTransfer?.getData("text/plain");
        if (url) this.addUrl(url.trim());
      }
    });
  }

  room() {
    return this.field.maxItems - this.items.length;
  }

  setError(message) {
    this.el.querySelector(".field-error").textContent = message || "";
    this.fileInput.toggleAttribute("aria-invalid", Boolean(message));
  }

  addFiles(files) {
    const images = files.filter((file) => file.type.startsWith("image/"));
    if (this.field.single && images.length) this.clear();
    const taken = images.slice(0, Math.max(0, this.room()));
    this.setError(images.length < files.length ? "Only image files can be used." :
      taken.length < images.length ? `At most ${this.field.maxItems} images.` : "");
    for (const file of taken) {
      this.items.push({ id: nextId++, file, preview: URL.createObjectURL(file), status: "waiting" });
    }
    this.changed();
    this.uploadPending();
  }

  addUrlFromInput() {
    const url = this.urlInput.value.trim();
    if (!url) return;
    if (this.addUrl(url)) this.urlInput.value = "";
  }

  addUrl(url) {
    if (!/^(https?:|data:image\/)/i.test(url)) {
      this.setError("Enter an http(s) URL or a data:image URI.");
      return false;
    }
    if (this.field.single) this.clear();
    if (this.room() <= 0) {
      this.setError(`At most ${this.field.maxItems} images.`);
      return false;
    }
    this.setError("");
    this.items.push({ id: nextId++, preview: url, url, status: "ready" });
    this.changed();
    return true;
  }

  remove(id) {
    const item = this.items.find((i) => i.id === id);
    if (item?.file) URL.revokeObjectURL(item.preview);
    this.items = this.items.filter((i) => i.id !== id);
    this.setError("");
    this.changed();
  }

  // Upload every file not yet stored (needs a key; without one they wait for Generate).
  uploadPending() {
    if (!this.api.getKey()) return Promise.resolve();
    const pending = this.items.filter((i) => i.file && (i.status === "waiting" || i.status === "error"));
    return Promise.all(pending.map((item) => this.uploadOne(item)));
  }

  uploadOne(item) {
    item.status = "uploading";
    item.error = undefined;
    this.changed();
    item.promise = this.api.upload(item.file).then(
      (url) => { item.url = url; item.status = "ready"; },
      (err) => { item.status = "error"; item.error = err; },
    ).finally(() => this.changed());
    return item.promise;
  }

  // Resolves when every image has a URL; throws the first upload error.
  async ensureUploaded() {
    await this.uploadPending();
    await Promise.all(this.items.filter((i) => i.status === "uploading").map((i) => i.promise));
    const failed = this.items.find((i) => i.status === "error");
    if (failed) throw failed.error;
  }

  // [{itemKey: url}, ...], or for a single field the URL itself (undefined when empty).
  value() {
    const urls = this.items.map((i) => i.url ?? `<uploading ${i.file?.name || "image"}>`);
    if (this.field.single) return urls[0];
    return urls.map((url) => ({ [this.field.itemKey]: url }));
  }

  clear() {
    this.items.forEach((i) => i.file && URL.revokeObjectURL(i.preview));
    this.items = [];
  }

  setValue(value) {
    this.clear();
    const urls = this.field.single ? [value].filter(Boolean) : (value || []).map((entry) => entry?.[this.field.itemKey] ?? "");
    this.items = urls.map((url) => ({ id: nextId++, preview: url, url, status: "ready" }));
    this.setError("");
    this.changed();
  }

  changed() {
    this.list.replaceChildren(...this.items.map((item, n) => this.thumb(item, n + 1)));
    this.drop.classList.toggle("full", this.room() <= 0);
    this.onChange?.();
  }

  thumb(item, n) {
    const label = { waiting: "waiting for key", uploading: "uploading…", ready: "", error: "upload failed" }[item.status];
    return h("li.thumb", { dataset: { status: item.status } },
      h("img", { src: item.preview, alt: `Reference face ${n}`, loading: "lazy", decoding: "async" }),
      label ? h("span.thumb-state", {}, label) : null,
      h("button.thumb-remove", { type: "button", "aria-label": `Remove reference face ${n}`, title: "Remove", onclick: () => this.remove(item.id) }, "×"));
  }
}
