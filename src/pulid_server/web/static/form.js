// The input form, rendered from the schema fields (schema.js). It reads the request the user means
// (required fields plus whatever differs from a default) and places 422 errors next to their field.

import { h } from "./dom.js";
import { FacePicker } from "./faces.js";
import { defaultOf } from "./schema.js";

const CUSTOM = "custom";

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

// Integers beyond 2^53 stay exact as BigInt (seeds go up to 2^63-1).
function parseNumber(text, type) {
  const t = text.trim();
  if (t === "") return undefined;
  if (type === "integer" && /^-?\d+$/.test(t)) {
    const big = BigInt(t);
    return big > BigInt(Number.MAX_SAFE_INTEGER) || big < -BigInt(Number.MAX_SAFE_INTEGER) ? big : Number(t);
  }
  const n = Number(t);
  return Number.isFinite(n) ? n : t; // a non-number goes to the server, which answers with a 422
}

function sliderStep(f) {
  if (f.numberType === "integer") return f.multipleOf || 1;
  const span = f.maximum - f.minimum;
  return f.multipleOf || 10 ** Math.floor(Math.log10(span / 100));
}

function numberAttrs(f) {
  return {
    type: "number",
    inputmode: f.numberType === "integer" ? "numeric" : "decimal",
    min: f.minimum,
    max: f.maximum,
    step: f.numberType === "integer" ? f.multipleOf || 1 : f.multipleOf || "any",
  };
}

function describedBy(name) {
  return `${name}-hint ${name}-error`;
}

export class InputForm {
  constructor(container, fields, api, onChange) {
    this.fields = fields;
    this.onChange = onChange;
    this.controls = {}; // name -> {get(), set(v), focus()}
    this.boxes = {}; // name -> field wrapper
    const primary = fields.filter((f) => f.kind === "images" || (f.kind === "text" && f.required));
    const rest = fields.filter((f) => !primary.includes(f));
    const grid = h("div.grid");
    for (const f of primary) container.append(this.renderField(f, api));
    for (const f of rest) (f.kind === "text" || f.kind === "json" ? container : grid).append(this.renderField(f, api));
    container.append(grid);
    container.addEventListener("input", () => this.onChange?.());
    container.addEventListener("change", () => this.onChange?.());
    this.reset();
  }

  renderField(f, api) {
    const render = {
      images: () => this.renderImages(f, api),
      text: () => this.renderText(f),
      number: () => this.renderNumber(f),
      enum: () => this.renderEnum(f),
      boolean: () => this.renderBoolean(f),
      "choice-or-object": () => this.renderChoiceOrObject(f),
      json: () => this.renderJson(f),
    }[f.kind];
    const box = render();
    box.classList.add("field");
    Object.assign(box.dataset, { field: f.name, kind: f.kind });
    this.boxes[f.name] = box;
    return box;
  }

  label(f, id) {
    return h("label", { htmlFor: id }, f.label, f.required ? h("span.req", { "aria-hidden": "true" }, " *") : null);
  }

  notes(f, extra = "") {
    const text = [f.description, extra].filter(Boolean).map((t) => (/[.!?)]$/.test(t) ? t : `${t}.`)).join(" ");
    return [h("p.hint", { id: `${f.name}-hint` }, text), h("p.field-error", { id: `${f.name}-error` })];
  }

  renderImages(f, api) {
    const picker = new FacePicker(f, api, () => this.onChange?.());
    this.picker = picker;
    this.controls[f.name] = { get: () => picker.value(), set: (v) => picker.setValue(v), focus: () => picker.fileInput.focus() };
    return picker.el;
  }

  renderText(f) {
    const id = `in-${f.name}`;
    const area = h("textarea", {
      id, name: f.name, rows: 3, maxLength: f.maxLength, required: f.required,
      placeholder: f.required ? "Describe the image you want…" : "", "aria-describedby": describedBy(f.name),
    });
    this.controls[f.name] = {
      get: () => (area.value === "" && !f.required && f.nullable ? null : area.value),
      set: (v) => { area.value = v ?? ""; },
      focus: () => area.focus(),
    };
    return h("div", {}, this.label(f, id), area, ...this.notes(f));
  }

  renderNumber(f) {
    const id = `in-${f.name}`;
    const input = h("input", { id, name: f.name, ...numberAttrs(f), "aria-describedby": describedBy(f.name),
      placeholder: f.nullable ? "random" : "" });
    const finite = Number.isFinite(f.minimum) && Number.isFinite(f.maximum) && f.maximum - f.minimum <= 1000;
    const row = [input];
    if (finite) {
      const slider = h("input.slider", { type: "range", id: `${id}-slider`, min: f.minimum, max: f.maximum, step: sliderStep(f), tabindex: "-1" });
      slider.addEventListener("input", () => { input.value = slider.value; });
      input.addEventListener("input", () => { if (input.value !== "") slider.value = input.value; });
      row.unshift(h("label.visually-hidden", { htmlFor: slider.id }, `${f.label} slider`), slider);
      this.sliders = { ...this.sliders, [f.name]: slider };
    }
    this.controls[f.name] = {
      get: () => parseNumber(input.value, f.numberType) ?? (f.nullable ? null : undefined),
      set: (v) => {
        input.value = v === null || v === undefined ? "" : String(v);
        const slider = this.sliders?.[f.name];
        if (slider && input.value !== "") slider.value = input.value;
      },
      focus: () => input.focus(),
    };
    const extra = f.nullable ? "Leave empty for a random one." : "";
    return h("div", {}, this.label(f, id), h("div.numrow", {}, ...row), ...this.notes(f, extra));
  }

  renderEnum(f) {
    const id = `in-${f.name}`;
    const options = (f.nullable ? [""] : []).concat(f.options);
    const select = h("select", { id, name: f.name, "aria-describedby": describedBy(f.name) },
      options.map((o) => h("option", { value: o }, o === "" ? "(none)" : o)));
    this.controls[f.name] = {
      get: () => (select.value === "" ? null : select.value),
      set: (v) => { select.value = v ?? ""; },
      focus: () => select.focus(),
    };
    return h("div", {}, this.label(f, id), select, ...this.notes(f));
  }

  renderBoolean(f) {
    const id = `in-${f.name}`;
    const box = h("input", { id, name: f.name, type: "checkbox", role: "switch", "aria-describedby": describedBy(f.name) });
    this.controls[f.name] = { get: () => box.checked, set: (v) => { box.checked = Boolean(v); }, focus: () => box.focus() };
    return h("div.check", {}, h("div.checkrow", {}, box, this.label(f, id)), ...this.notes(f));
  }

  // A preset name or a custom object (image_size: "square_hd" or {width, height}).
  renderChoiceOrObject(f) {
    const id = `in-${f.name}`;
    const select = h("select", { id, name: f.name, "aria-describedby": describedBy(f.name) },
      f.options.map((o) => h("option", { value: o }, o)), h("option", { value: CUSTOM }, "custom"));
    const subs = {};
    const custom = h("div.subgrid", {}, f.object.map((sf) => {
      const sid = `${id}-${sf.name}`;
      subs[sf.name] = h("input", { id: sid, name: `${f.name}.${sf.name}`, ...numberAttrs(sf), "aria-describedby": describedBy(f.name) });
      return h("div", { dataset: { subfield: sf.name } }, h("label", { htmlFor: sid }, sf.label), subs[sf.name]);
    }));
    const sync = () => { custom.hidden = select.value !== CUSTOM; };
    select.addEventListener("change", sync);
    this.controls[f.name] = {
      get: () => (select.value === CUSTOM
        ? Object.fromEntries(f.object.map((sf) => [sf.name, parseNumber(subs[sf.name].value, sf.numberType)]).filter(([, v]) => v !== undefined))
        : select.value),
      set: (v) => {
        const obj = v && typeof v === "object" ? v : null;
        select.value = obj ? CUSTOM : v;
        const fill = { ...Object.fromEntries(f.object.map((sf) => [sf.name, sf.default])), ...(obj || {}) };
        for (const sf of f.object) subs[sf.name].value = fill[sf.name] ?? "";
        sync();
      },
      focus: () => select.focus(),
      focusSub: (name) => { if (!subs[name]) return false; subs[name].focus(); return true; },
    };
    return h("fieldset", {}, h("legend", {}, f.label), h("label.visually-hidden", { htmlFor: id }, `${f.label} preset`), select, custom, ...this.notes(f));
  }

  renderJson(f) {
    const id = `in-${f.name}`;
    const area = h("textarea.mono", { id, name: f.name, rows: 2, "aria-describedby": describedBy(f.name) });
    this.controls[f.name] = {
      get: () => { if (!area.value.trim()) return undefined; try { return JSON.parse(area.value); } catch { return area.value; } },
      set: (v) => { area.value = v === undefined ? "" : JSON.stringify(v); },
      focus: () => area.focus(),
    };
    return h("div", {}, this.label(f, id), area, ...this.notes(f, "(JSON)"));
  }

  reset() {
    for (const f of this.fields) this.controls[f.name].set(defaultOf(f));
    this.clearErrors();
  }

  // Fill the form from a (sparse) request body; missing fields take their defaults.
  setValues(input) {
    this.reset();
    for (const f of this.fields) if (input && f.name in input) this.controls[f.name].set(input[f.name]);
  }

  // The request body: required fields, and optional ones only where they differ from the default.
  request() {
    const body = {};
    for (const f of this.fields) {
      const value = this.controls[f.name].get();
      if (value === undefined) continue;
      if (!f.required && f.default !== undefined && same(value, f.default)) continue;
      if (!f.required && f.default === undefined && value === null) continue;
      if (f.kind === "images" && !f.required && value.length === 0) continue;
      body[f.name] = value;
    }
    return body;
  }

  clearErrors() {
    for (const box of Object.values(this.boxes)) {
      box.querySelector(`#${CSS.escape(box.dataset.field)}-error`).textContent = "";
      box.querySelectorAll("[aria-invalid]").forEach((el) => el.removeAttribute("aria-invalid"));
      box.classList.remove("invalid");
    }
  }

  // Show each 422 `detail` item next to the field its `loc` names; returns the ones with no field.
  showErrors(detail) {
    const unplaced = [];
    let first = null;
    for (const item of Array.isArray(detail) ? detail : []) {
      const loc = Array.isArray(item.loc) ? item.loc : [];
      const name = loc[0] === "body" ? loc[1] : undefined;
      const box = typeof name === "string" ? this.boxes[name] : undefined;
      if (!box) {
        unplaced.push(item);
        continue;
      }
      const where = loc.slice(2).filter((p) => typeof p === "number").map((p) => `#${p + 1}`).join(" ");
      const out = box.querySelector(`#${CSS.escape(name)}-error`);
      const text = `${where ? `${where}: ` : ""}${item.msg}`;
      out.textContent = out.textContent ? `${out.textContent} · ${text}` : text;
      box.classList.add("invalid");
      box.querySelectorAll("input:not([type=range]), select, textarea").forEach((el) => el.setAttribute("aria-invalid", "true"));
      if (!first) {
        first = name;
        const control = this.controls[name];
        const subs = loc.slice(2).filter((p) => typeof p === "string");
        if (!(control.focusSub && subs.some((s) => control.focusSub(s)))) control.focus();
      }
    }
    return unplaced;
  }
}
