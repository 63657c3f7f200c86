"""The playground page in a real headless Chromium (Debian's `chromium`, driven by playwright) against a
real server with the tiny model: form from /openapi.json, upload, generate, progress, cancel, history,
error display, and the API tab's snippets (which are run for real)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, ConsoleMessage, Page, ViewportSize, sync_playwright

from tests.servers import REPO, Server

pytestmark = pytest.mark.e2e

ARTIFACTS = REPO / "artifacts" / "playground"
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 375, "height": 740}
STATIC = REPO / "src" / "pulid_server" / "web" / "static"
# Records every text the status line and progress label show, so a fast run's progress is still seen.
RECORDER = """
window.__seen = [];
document.addEventListener("DOMContentLoaded", () => {
  const note = () => {
    for (const sel of ["#run-status", "#progress-label"]) {
      const text = document.querySelector(sel)?.textContent;
      if (text && window.__seen[window.__seen.length - 1] !== text) window.__seen.push(text);
    }
  };
  new MutationObserver(note).observe(document.body, { subtree: true, childList: true, characterData: true });
});
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail(
            "Debian's chromium is not installed: run `apt-get update && apt-get install -y chromium` (as root)"
        )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(20_000)
    context.add_init_script(RECORDER)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: _console_error(msg, problems))
    yield page
    context.close()
    assert not problems, problems


def _console_error(msg: ConsoleMessage, problems: list[str]) -> None:
    # Failed HTTP calls the page handles (401/422 tests, the cancelled result) log as resource errors.
    if msg.type == "error" and "Failed to load resource" not in msg.text:
        problems.append(f"console: {msg.text}")


def open_playground(page: Page, server: Server, key: str | None = None, query: str = "") -> None:
    page.goto(f"{server.url}/playground{query}")
    page.wait_for_selector("body[data-ready=true]")
    page.fill("#api-key", key if key is not None else server.key)
    page.dispatch_event("#api-key", "change")


def shoot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def wait_final(page: Page, status: str, timeout: float = 120_000) -> None:
    page.wait_for_selector(f"#run-badge[data-status={status}]", timeout=timeout)


def fill_basic(page: Page, face: Path, prompt: str = "portrait of an astronaut, studio light") -> None:
    page.set_input_files("#in-reference_images", str(face))
    page.wait_for_selector(".thumb[data-status=ready]")
    page.fill("#in-prompt", prompt)
    page.select_option("#in-image_size", "custom")
    page.fill("#in-image_size-width", "64")
    page.fill("#in-image_size-height", "64")


# -- served without a key, nothing from elsewhere ----------------------------------------------------


def test_page_and_assets_are_served_without_a_key(server: Server) -> None:
    for path in ("/", "/playground"):
        r = httpx.get(server.url + path, timeout=10)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert '<script type="module" src="/playground/static/app.js">' in r.text
    modules = sorted(p.name for p in STATIC.glob("*.js"))
    for name in modules:
        source = (STATIC / name).read_text()
        for dep in re.findall(r'from "\./([\w.-]+)"', source):
            assert dep in modules, f"{name} imports a missing module {dep}"
        assert not re.search(r'(import|from)\s*\(?\s*"https?:', source), f"{name} loads code from elsewhere"
        r = httpx.get(f"{server.url}/playground/static/{name}", timeout=10)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript"), name
    html = (STATIC / "index.html").read_text()
    assert not re.search(r'(src|href)="(https?:)?//', html), "the page must not load anything from a CDN"
    assert (
        "url(http" not in (STATIC / "app.css").read_text()
        and "@import" not in (STATIC / "app.css").read_text()
    )
    assert (
        httpx.get(f"{server.url}/playground/static/app.css", timeout=10)
        .headers["content-type"]
        .startswith("text/css")
    )
    for bad in ("nope.js", "..%2F__init__.py", "index.html", "__init__.py"):
        assert httpx.get(f"{server.url}/playground/static/{bad}", timeout=10).status_code == 404, bad


# -- the form is the schema ---------------------------------------------------------------------------


def _schema(server: Server, endpoint: str) -> tuple[dict[str, Any], dict[str, Any]]:
    openapi = httpx.get(server.url + "/openapi.json", timeout=10).json()
    ref = openapi["paths"][f"/queue/{endpoint}"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]["$ref"]
    components = openapi["components"]["schemas"]
    return components[ref.rsplit("/", 1)[1]], components


def _deref(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    return components[schema["$ref"].rsplit("/", 1)[1]] if "$ref" in schema else schema


READ_FORM = """() => {
  const num = (el) => ({min: el.getAttribute("min"), max: el.getAttribute("max"), step: el.getAttribute("step"), value: el.value});
  const out = {};
  for (const box of document.querySelectorAll("#fields [data-field]")) {
    const name = box.dataset.field, kind = box.dataset.kind;
    const el = document.getElementById("in-" + name);
    const f = {kind, tag: el.tagName.toLowerCase(), type: el.type, required: el.required};
    if (kind === "images") Object.assign(f, {minItems: box.dataset.minItems, maxItems: box.dataset.maxItems, itemKey: box.dataset.itemKey, single: box.dataset.single === "true", multiple: el.multiple});
    if (kind === "text") Object.assign(f, {value: el.value, maxLength: el.maxLength});
    if (kind === "number") Object.assign(f, num(el));
    if (kind === "boolean") f.checked = el.checked;
    if (kind === "enum" || kind === "choice-or-object") Object.assign(f, {options: [...el.options].map((o) => o.value), value: el.value});
    if (kind === "choice-or-object") {
      f.sub = {};
      for (const sub of box.querySelectorAll("[data-subfield]")) f.sub[sub.dataset.subfield] = num(sub.querySelector("input"));
    }
    out[name] = f;
  }
  return out;
}"""


def _assert_number(dom: dict[str, Any], schema: dict[str, Any], default: Any, where: str) -> None:
    assert float(dom["min"]) == schema["minimum"], where
    assert float(dom["max"]) == schema["maximum"], where
    expected_step = (
        schema.get("multipleOf", 1) if schema["type"] == "integer" else schema.get("multipleOf", "any")
    )
    assert dom["step"] == "any" if expected_step == "any" else float(dom["step"]) == expected_step, where
    assert (dom["value"] == "") if default is None else float(dom["value"]) == default, where


def test_banner_says_the_tiny_models_images_are_noise(page: Page, server: Server) -> None:
    """The test server runs fal-ai/pulid on the tiny preset: the page says so, with the fixing command."""
    open_playground(page, server)
    page.wait_for_selector("#model-notice:not([hidden])")
    notice = page.inner_text("#model-notice")
    assert "fal-ai/pulid runs the tiny model" in notice and "noise" in notice
    assert page.inner_text("#model-notice code") == "pulid weights download --family sdxl"
    open_playground(page, server, query="?endpoint=test/echo")  # an endpoint without a model: no banner
    page.wait_for_load_state("networkidle")
    assert page.is_hidden("#model-notice")


@pytest.mark.parametrize("endpoint", ["fal-ai/pulid", "fal-ai/flux-pulid"])
def test_form_matches_openapi(page: Page, server: Server, endpoint: str) -> None:
    """Every input property is a form field with the schema's default, range and options."""
    root, components = _schema(server, endpoint)
    open_playground(page, server, query=f"?endpoint={endpoint}")
    assert page.input_value("#endpoint-select") == endpoint
    assert {"fal-ai/pulid", "fal-ai/flux-pulid", "test/echo"} <= set(
        page.eval_on_selector_all("#endpoint-select option", "options => options.map((o) => o.value)")
    )
    form = page.evaluate(READ_FORM)
    assert sorted(form) == sorted(root["properties"]), "the fields must be the schema's properties"
    # required fields and images first, then the text areas, then the rest, each in the schema's order
    names = list(root["properties"])
    assert [n for n in form if form[n]["kind"] not in ("images", "text")] == [
        n for n in names if form[n]["kind"] not in ("images", "text")
    ]
    required = set(root.get("required", []))
    for name, prop in root["properties"].items():
        dom, default = form[name], prop.get("default")
        branches = [_deref(b, components) for b in prop.get("anyOf", [])]
        non_null = [b for b in branches if b.get("type") != "null"]
        if prop.get("type") == "array":
            item = _deref(prop["items"], components)
            assert dom["kind"] == "images" and dom["type"] == "file", name
            assert (int(dom["minItems"]), int(dom["maxItems"])) == (prop["minItems"], prop["maxItems"]), name
            assert [dom["itemKey"]] == list(item["properties"]) and dom["multiple"], name
        elif prop.get("type") == "string" and name.endswith("image_url"):  # one image: the picker, single
            assert dom["kind"] == "images" and dom["type"] == "file" and dom["single"], name
            assert not dom["multiple"] and dom["maxItems"] == "1", name
        elif prop.get("type") == "string" and "enum" not in prop:
            assert dom["kind"] == "text" and dom["tag"] == "textarea", name
            assert dom["value"] == (default or "") and dom["maxLength"] == prop["maxLength"], name
            assert dom["required"] == (name in required), name
        elif prop.get("type") in ("integer", "number"):
            assert dom["kind"] == "number", name
            _assert_number(dom, prop, default, name)
        elif "enum" in prop:
            assert dom["kind"] == "enum" and dom["options"] == prop["enum"] and dom["value"] == default, name
        elif prop.get("type") == "boolean":
            assert dom["kind"] == "boolean" and dom["type"] == "checkbox" and dom["checked"] == default, name
        elif len(non_null) == 1 and non_null[0]["type"] in ("integer", "number"):  # nullable number (seed)
            assert dom["kind"] == "number", name
            _assert_number(dom, non_null[0], default, name)
        else:  # a preset name or a custom object (image_size)
            enum = next(b for b in non_null if "enum" in b)
            obj = next(b for b in non_null if b.get("type") == "object")
            assert dom["kind"] == "choice-or-object" and dom["options"] == [*enum["enum"], "custom"], name
            assert dom["value"] == (default if isinstance(default, str) else "custom"), name
            assert list(dom["sub"]) == list(obj["properties"]), name
            for sub, sub_prop in obj["properties"].items():
                given = default if isinstance(default, dict) else {}  # a preset default: the object's own
                sub_default = given.get(sub, sub_prop.get("default"))
                _assert_number(dom["sub"][sub], sub_prop, sub_default, f"{name}.{sub}")
    # accessibility: every control has a <label>, every button a name
    unlabelled = page.evaluate("""() => [...document.querySelectorAll("input, select, textarea")]
        .filter((el) => !el.labels || el.labels.length === 0).map((el) => el.id || el.name)""")
    assert unlabelled == []
    nameless = page.evaluate("""() => [...document.querySelectorAll("button")]
        .filter((b) => !(b.getAttribute("aria-label") || b.textContent).trim()).map((b) => b.outerHTML)""")
    assert nameless == []


# -- the whole flow -------------------------------------------------------------------------------------


def test_generate_progress_cancel_and_history(page: Page, server: Server, face_png: Path) -> None:
    open_playground(page, server)
    fill_basic(page, face_png)
    page.fill("#in-seed", "1234")
    shoot(page, "desktop-form")
    with page.expect_request(
        lambda r: r.method == "POST" and r.url.endswith("/queue/fal-ai/pulid")
    ) as submitted:
        page.click("#generate")
    body = submitted.value.post_data_json
    assert body is not None
    assert body["image_size"] == {"width": 64, "height": 64} and body["seed"] == 1234
    assert body["reference_images"][0]["image_url"].startswith(f"{server.url}/files/uploads/")
    wait_final(page, "COMPLETED")
    seen = page.evaluate("window.__seen")
    assert any(re.fullmatch(r"Step \d of 4", text) for text in seen), seen
    assert any(text.startswith("In the queue") or text == "Starting…" for text in seen), seen
    image = page.wait_for_selector("#gallery img")
    assert image is not None
    page.wait_for_function("() => document.querySelector('#gallery img').complete")
    assert image.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [64, 64]
    assert page.inner_text("#gallery .size") == "64 × 64"
    assert page.get_attribute("#gallery a[download]", "href") == image.get_attribute("src")
    assert page.inner_text("#run-meta [data-seed]") == "1234"
    assert "step 4/4" in (page.text_content("#logs") or "")
    shoot(page, "desktop-result")
    page.set_viewport_size(PHONE)
    shoot(page, "phone-result")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], (
        "no sideways scrolling on a phone"
    )
    page.set_viewport_size(DESKTOP)

    # "use this seed": clear the seed, then take it back from the result
    page.fill("#in-seed", "")
    page.click("#run-meta button")
    assert page.input_value("#in-seed") == "1234"

    # a slow second run (50 steps), cancelled while it runs
    page.fill("#in-num_inference_steps", "50")
    page.fill("#in-prompt", "a slow one to cancel")
    page.click("#generate")
    page.wait_for_function(
        "() => /^Step \\d+ of 50$/.test(document.querySelector('#progress-label').textContent)",
        timeout=120_000,
    )
    # a reload mid-run picks the request up again from the history, with its inputs
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    page.wait_for_function(
        "() => /^Step \\d+ of 50$/.test(document.querySelector('#progress-label').textContent)",
        timeout=120_000,
    )
    assert page.input_value("#in-prompt") == "a slow one to cancel"
    assert page.is_visible("#cancel")
    shoot(page, "desktop-running")
    page.click("#cancel")
    wait_final(page, "CANCELLED")
    assert "Cancelled" in page.inner_text("#run-error")
    assert page.inner_text("#run-status") == "Request cancelled."
    cancelled_id = page.evaluate(
        "JSON.parse(localStorage.getItem('pulid.playground.history.v1'))[0].request_id"
    )
    with server.client() as client:
        status = client.get(f"/queue/fal-ai/pulid/requests/{cancelled_id}/status").json()
    assert status["status"] == "COMPLETED" and status["error_type"] == "request_cancelled"
    assert page.is_enabled("#generate")

    # reload: both requests are in the history, and the finished one reopens with inputs and image
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    page.click("#tab-history")
    items = page.locator(".hist-item")
    assert items.count() == 2
    assert [items.nth(i).get_attribute("data-status") for i in range(2)] == ["CANCELLED", "COMPLETED"]
    shoot(page, "desktop-history")
    items.nth(1).get_by_role("button", name=re.compile("^Open")).click()
    assert page.input_value("#in-prompt") == "portrait of an astronaut, studio light"
    assert page.input_value("#in-seed") == "1234"
    assert page.input_value("#in-image_size-width") == "64"
    assert page.locator(".thumb").count() == 1
    page.wait_for_function("() => document.querySelector('#gallery img')?.naturalWidth === 64")
    page.set_viewport_size(PHONE)
    shoot(page, "phone-reopened")
    page.click("#tab-history")
    shoot(page, "phone-history")


# -- fal-ai/flux-pulid: picked from the header, one reference image, inline (sync_mode) results ---------


def test_flux_pulid_from_the_endpoint_picker(page: Page, server: Server, face_png: Path) -> None:
    open_playground(page, server)
    with page.expect_navigation():
        page.select_option("#endpoint-select", "fal-ai/flux-pulid")
    page.wait_for_selector("body[data-ready=true]")
    assert page.url.endswith("/playground?endpoint=fal-ai%2Fflux-pulid")
    page.wait_for_selector("#model-notice:not([hidden])")
    assert page.inner_text("#model-notice code") == "pulid weights download --family flux"
    # one image: a second pick replaces the first
    for _ in range(2):
        page.set_input_files("#in-reference_image_url", str(face_png))
        page.wait_for_selector(".thumb[data-status=ready]")
    assert page.locator(".thumb").count() == 1
    assert page.inner_text("#reference_image_url-hint").startswith("One image.")
    page.fill("#in-prompt", "portrait, flux")
    page.select_option("#in-image_size", "custom")
    page.fill("#in-image_size-width", "64")
    page.fill("#in-image_size-height", "64")
    page.fill("#in-num_inference_steps", "2")
    page.select_option("#in-max_sequence_length", "256")
    page.check("#in-sync_mode")
    with page.expect_request(
        lambda r: r.method == "POST" and r.url.endswith("/queue/fal-ai/flux-pulid")
    ) as submitted:
        page.click("#generate")
    body = submitted.value.post_data_json
    assert body is not None and body["reference_image_url"].startswith(f"{server.url}/files/uploads/")
    assert (body["max_sequence_length"], body["sync_mode"], body["num_inference_steps"]) == ("256", True, 2)
    assert "true_cfg" not in body  # defaults are not sent
    wait_final(page, "COMPLETED")
    image = page.wait_for_selector("#gallery img")
    assert image is not None and (image.get_attribute("src") or "").startswith("data:image/png;base64,")
    page.wait_for_function("() => document.querySelector('#gallery img').naturalWidth === 64")
    assert page.get_attribute("#gallery a[download]", "href") == image.get_attribute("src")
    shoot(page, "desktop-flux-result")

    # no face: the error sits at the reference image field
    flat = Image.new("RGB", (96, 96), (120, 120, 120))
    buf = io.BytesIO()
    flat.save(buf, "PNG")
    page.fill(
        "#in-reference_image_url-url", "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    )
    page.get_by_role("button", name="Add URL").click()
    assert page.locator(".thumb").count() == 1
    page.click("#generate")
    wait_final(page, "FAILED")
    assert "No face found" in page.inner_text("#run-error")
    assert page.inner_text("#reference_image_url-error").startswith("no face found")

    # the history lists both endpoints' requests; a flux one opens in the flux form from the pulid page
    with page.expect_navigation():
        page.select_option("#endpoint-select", "fal-ai/pulid")
    page.wait_for_selector("body[data-ready=true]")
    page.click("#tab-history")
    done = page.locator(".hist-item[data-status=COMPLETED]").filter(has_text="fal-ai/flux-pulid")
    with page.expect_navigation():
        done.get_by_role("button", name=re.compile("^Open")).click()
    page.wait_for_selector("body[data-ready=true]")
    assert page.input_value("#endpoint-select") == "fal-ai/flux-pulid"
    assert page.input_value("#in-prompt") == "portrait, flux" and page.is_checked("#in-sync_mode")
    page.wait_for_function("() => document.querySelector('#gallery img')?.naturalWidth === 64")


# -- errors where they belong ---------------------------------------------------------------------------


def test_errors_are_shown_next_to_their_cause(page: Page, server: Server, face_png: Path) -> None:
    # faces: a pasted data: URI joins the uploaded photo; thumbnails can be removed
    open_playground(page, server)
    fill_basic(page, face_png)
    page.fill(
        "#in-reference_images-url",
        "data:image/png;base64," + base64.b64encode(face_png.read_bytes()).decode(),
    )
    page.get_by_role("button", name="Add URL").click()
    assert page.locator(".thumb").count() == 2
    page.get_by_role("button", name="Remove reference face 2").click()
    assert page.locator(".thumb").count() == 1

    # 422: shown next to the field named by `loc`
    page.fill("#in-num_images", "9")
    page.click("#generate")
    page.wait_for_selector("#num_images-error:not(:empty)")
    assert "less than or equal to 4" in page.inner_text("#num_images-error")
    assert page.get_attribute("#in-num_images", "aria-invalid") == "true"
    assert page.inner_text("#prompt-error") == ""
    shoot(page, "desktop-422")
    page.fill("#in-num_images", "1")

    # 401: shown at the key box; nothing submitted
    page.fill("#api-key", "nope:wrong")
    page.dispatch_event("#api-key", "change")
    page.click("#generate")
    page.wait_for_selector("#key-error:not(:empty)")
    assert "rejected this key" in page.inner_text("#key-error")
    assert page.evaluate("localStorage.getItem('pulid.playground.history.v1')") is None

    # a job error (COMPLETED with error/error_type), on a test endpoint whose form the page builds too
    open_playground(page, server, query="?endpoint=test/fail")
    assert page.evaluate(
        "[...document.querySelectorAll('#fields [data-field]')].map(e => e.dataset.field)"
    ) == ["kind"]
    page.fill("#in-kind", "user")
    page.click("#generate")
    wait_final(page, "FAILED")
    error = page.inner_text("#run-error")
    assert "No face found" in error and "reference_images[0].image_url: no face found" in error
    assert page.inner_text("#run-status") == "Request failed."
    assert "error_type: no_face" in error
    shoot(page, "desktop-job-error")
    page.click("#run-again")  # the same inputs again: a second request, failing the same way
    page.wait_for_function(
        "() => JSON.parse(localStorage.getItem('pulid.playground.history.v1') || '[]').length === 2"
    )
    wait_final(page, "FAILED")
    history = page.evaluate("JSON.parse(localStorage.getItem('pulid.playground.history.v1'))")
    assert [e["input"] for e in history] == [{"kind": "user"}, {"kind": "user"}]
    assert [e["error"]["error_type"] for e in history] == ["no_face", "no_face"]


# -- the API tab -------------------------------------------------------------------------------------


def test_api_tab_shows_the_exact_request_and_the_snippets_run(
    page: Page, server: Server, face_png: Path, tmp_path: Path
) -> None:
    open_playground(page, server)
    fill_basic(page, face_png, prompt='it\'s a "quoted" prompt')
    page.fill("#in-seed", "7")
    page.click("#tab-api")
    snippets = {
        s.get_attribute("data-snippet"): s.locator("code").inner_text()
        for s in page.locator(".snippet").all()
    }
    assert list(snippets) == ["curl", "python", "fal-client", "javascript"]
    assert server.key not in "".join(snippets.values()), "snippets read the key from the environment"
    assert f'proxyUrl: {{ url: "{server.url}/api/fal/proxy", when: "always" }}' in snippets["javascript"]
    shoot(page, "desktop-api")

    page.click("#tab-generate")
    with page.expect_request(
        lambda r: r.method == "POST" and r.url.endswith("/queue/fal-ai/pulid")
    ) as submitted:
        page.click("#generate")
    sent = submitted.value.post_data_json
    curl_args = shlex.split(snippets["curl"].split("\n\n")[0].replace("\\\n", " "), comments=True)
    assert json.loads(curl_args[curl_args.index("-d") + 1]) == sent
    wait_final(page, "COMPLETED")

    env = {**os.environ, "PULID_KEY": server.key, "FAL_KEY": server.key, "PYTHONPATH": str(REPO)}
    assert shutil.which("curl"), "curl is needed to run the curl snippet"
    out = subprocess.run(
        ["bash", "-c", snippets["curl"]], check=False, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and json.loads(out.stdout)["status"] == "IN_QUEUE", out.stderr
    for name in ("python", "fal-client"):
        script = tmp_path / f"{name}.py"
        script.write_text(snippets[name])
        out = subprocess.run(
            [sys.executable, str(script)], check=False, env=env, capture_output=True, text=True, timeout=180
        )
        assert out.returncode == 0, f"{name} snippet failed:\n{out.stderr}"
        assert "'seed': 7" in out.stdout and "/files/outputs/" in out.stdout, out.stdout


# -- pure helpers, in the browser that runs them -------------------------------------------------------------


def test_js_helpers(page: Page, server: Server) -> None:
    open_playground(page, server)
    got = page.evaluate("""async () => {
      const api = await import("/playground/static/api.js");
      const snip = await import("/playground/static/snippets.js");
      return {
        step: api.parseStep("step 3/20"),
        nostep: api.parseStep("decoding"),
        event: api.parseEvent(': keepalive\\ndata: {"status":"IN_QUEUE",\\ndata: "queue_position":2}'),
        comment: api.parseEvent(": keepalive"),
        big: api.toJson({seed: BigInt("9223372036854775807"), s: "x"}),
        app: api.appOf("fal-ai/pulid/sub/path"),
        py: snip.pythonLiteral({a: true, b: null, c: [1.5, "it's"], d: {}}),
      };
    }""")
    assert got["step"] == {"step": 3, "total": 20} and got["nostep"] is None
    assert got["event"] == {"status": "IN_QUEUE", "queue_position": 2} and got["comment"] is None
    assert got["big"] == '{"seed":9223372036854775807,"s":"x"}'
    assert got["app"] == "fal-ai/pulid"
    assert (
        got["py"]
        == '{\n    "a": True,\n    "b": None,\n    "c": [\n        1.5,\n        "it\'s",\n    ],\n    "d": {},\n}'
    )
