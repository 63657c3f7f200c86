"""An endpoint's input fields as `pulid run` options, read from the server's `/openapi.json`.

Each top-level property of the endpoint's input schema is an option named after it (`num_inference_steps`
-> `--num-inference-steps`), its value parsed by the schema's type, so the same command serves every
endpoint the server publishes. Plain data in, plain data out: no typer and no server code here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SIZE = re.compile(r"^(\d+)[xX](\d+)$")
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


class FieldArgError(ValueError):
    """A field option that cannot be used: `option` names it, the message says why."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option


@dataclass(frozen=True)
class InputField:
    """One input property. kind: bool | integer | number | string | url (a string URL: a local file is
    uploaded) | images (a list of {key: url}; repeat the option) | size (a preset or WxH) | json."""

    name: str
    kind: str
    required: bool
    description: str = ""
    default: Any = None
    choices: tuple[str, ...] = ()
    item_key: str = ""  # images: the URL property of each item

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def is_image(self) -> bool:
        return self.kind in ("url", "images")


def input_fields(openapi: dict[str, Any], endpoint_id: str) -> list[InputField] | None:
    """The fields of the endpoint's POST /queue body, in schema order; None if the server has no such endpoint."""
    post = openapi.get("paths", {}).get(f"/queue/{endpoint_id}", {}).get("post")
    if post is None:
        return None
    root = _resolve(openapi, post["requestBody"]["content"]["application/json"]["schema"])
    required = set(root.get("required", []))
    return [
        _describe(openapi, name, prop, name in required) for name, prop in root.get("properties", {}).items()
    ]


def published_endpoints(openapi: dict[str, Any]) -> list[str]:
    return [
        p.removeprefix("/queue/")
        for p in openapi.get("paths", {})
        if p.startswith("/queue/") and "{" not in p
    ]


def _resolve(openapi: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    for _ in range(16):  # bounded: a $ref cycle cannot hang the CLI
        ref = schema.get("$ref")
        if not isinstance(ref, str):
            break
        node: Any = openapi
        for part in ref.removeprefix("#/").split("/"):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        schema = node
    return schema


def _describe(openapi: dict[str, Any], name: str, prop: dict[str, Any], required: bool) -> InputField:
    common = {"name": name, "required": required, "description": prop.get("description", ""),
              "default": prop.get("default")}  # fmt: skip
    schema = _resolve(openapi, prop)
    branches = [_resolve(openapi, b) for b in schema.get("anyOf", schema.get("oneOf", []))]
    branches = [b for b in branches if b.get("type") != "null"] or [schema]
    enums = [e for b in branches for e in b.get("enum", [])]
    sized = any(
        b.get("type") == "object" and {"width", "height"} <= set(b.get("properties", {})) for b in branches
    )
    if sized:
        return InputField(kind="size", choices=tuple(map(str, enums)), **common)
    if len(branches) > 1:
        return InputField(kind="json", **common)
    only = branches[0]
    kind = only.get("type", "json")
    if kind == "array":
        item = _resolve(openapi, only.get("items", {}))
        keys = list(item.get("properties", {}))
        if item.get("type") == "object" and len(keys) == 1 and keys[0].endswith("url"):
            return InputField(kind="images", item_key=keys[0], **common)
        return InputField(kind="json", **common)
    if kind == "string" and name.endswith("url"):
        return InputField(kind="url", **common)
    if kind in ("boolean", "integer", "number", "string"):
        return InputField(
            kind="bool" if kind == "boolean" else kind, choices=tuple(map(str, enums)), **common
        )
    return InputField(kind="json", **common)


def parse_field_args(fields: list[InputField], args: list[str], refs: list[str]) -> dict[str, Any]:
    """`--name value` pairs (and `--name=value`, `--flag` / `--no-flag` for booleans) -> input values.
    `refs` (`--ref`) go to the endpoint's image field. Local files become Paths (the client uploads them)."""
    by_option = {f.option: f for f in fields} | {"--" + f.name: f for f in fields}
    values: dict[str, Any] = {}
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        option, eq, inline = token.partition("=")
        negated = option.startswith("--no-") and by_option.get("--" + option[5:]) is not None
        field = by_option.get("--" + option[5:] if negated else option)
        if field is None or (negated and field.kind != "bool"):
            known = ", ".join(f.option for f in fields)
            raise FieldArgError(token, f"no such option for this endpoint (its fields: {known}, or --ref)")
        if field.kind == "bool" and not eq and (negated or i >= len(args) or args[i].startswith("--")):
            values[field.name] = not negated
            continue
        if not eq:
            if i >= len(args):
                raise FieldArgError(option, "needs a value")
            inline, i = args[i], i + 1
        _set(values, field, _parse(field, option, inline))
    if refs:
        image_fields = [f for f in fields if f.is_image]
        if not image_fields:
            raise FieldArgError("--ref", "this endpoint has no image field")
        for ref in refs:
            _set(values, image_fields[0], _image(image_fields[0], "--ref", ref))
    return values


def _set(values: dict[str, Any], field: InputField, value: Any) -> None:
    if field.kind == "images":
        values.setdefault(field.name, []).extend(value if isinstance(value, list) else [value])
    elif field.name in values and field.kind == "url":
        raise FieldArgError(field.option, "takes one image")
    else:
        values[field.name] = value


def _parse(field: InputField, option: str, text: str) -> Any:
    try:
        if field.kind == "json" or (field.kind in ("images", "size") and text[:1] in "[{"):
            return json.loads(text)
        if field.kind == "bool":
            if text.lower() not in TRUE + FALSE:
                raise ValueError("expected true or false")
            return text.lower() in TRUE
        if field.kind in ("integer", "number"):
            return _number(field.kind, text)
        if field.kind == "size":
            match = SIZE.match(text)
            if match:
                return {"width": int(match[1]), "height": int(match[2])}
            if text not in field.choices:
                raise ValueError(f"expected {' | '.join(field.choices)} or WxH, e.g. 768x1024")
            return text
        if field.is_image:
            return _image(field, option, text)
        return text
    except ValueError as exc:
        raise FieldArgError(option, str(exc)) from None


def _number(kind: str, text: str) -> int | float:
    try:
        return int(text) if kind == "integer" else float(text)
    except ValueError:
        raise ValueError(
            f"expected {'an integer' if kind == 'integer' else 'a number'}, got {text!r}"
        ) from None


def _image(field: InputField, option: str, value: str) -> Any:
    """An image argument: a URL as it is, a local file as a Path (uploaded by the client)."""
    if value.startswith(("http://", "https://", "data:")):
        url: Any = value
    elif Path(value).is_file():
        url = Path(value)
    else:
        raise FieldArgError(option, f"{value!r} is neither a file nor an http(s)/data: URL")
    return {field.item_key: url} if field.kind == "images" else url
