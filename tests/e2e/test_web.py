"""The web page in a real browser: Debian's Chromium, headless, driven by playwright (executable_path:
no browser is downloaded), against the web service and the whole stack as processes (digiface64:
the photo path needs its face alignment template).

Upload a real portrait -> the face found; a slider move -> a new after-image within one second;
a phrase; keep ticked; bad input -> a sentence, never a stack trace; an oversize upload is refused
by the web service itself (413). Uploads are faithful by default (seconds: the face optimised against
the photo, its inversion report shown); the slider path of a faithful face stays fast. Saves
out/web_screenshot.png and out/web_faithful_screenshot.png.
"""
from __future__ import annotations

import base64
import http.client
import io
import json
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services.common.processes import terminate
from services.common.redis_server import free_port
from services.stack import Stack
from tests.support import MODEL_STORE, ROOT
from web import launch

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT = ROOT / "out" / "web_screenshot.png"
FAITHFUL_SCREENSHOT = ROOT / "out" / "web_faithful_screenshot.png"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack.on_free_ports(MODEL_STORE, ["digiface64"], tmp_path_factory.mktemp("web-stack"), metrics=False)
    s.start(timeout_s=120)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def web(stack, tmp_path_factory):
    """python -m web on a free port, a client of the stack's gateway, uploads capped at 1 MiB."""
    work = tmp_path_factory.mktemp("web")
    port = free_port()
    proc = launch.start(stack.address("gateway"), port, work, work / "web.log", ["--max-upload-mb", "1"])
    url = f"http://127.0.0.1:{port}/"
    try:
        launch.wait_healthy(url, proc)
        yield url, work / "web.log"
    finally:
        terminate(proc)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's Chromium is missing: apt-get install -y chromium (make test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture()
def photos(tmp_path) -> Path:
    from skimage import data

    Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.png")
    (tmp_path / "notes.txt").write_text("this is not a photo\n")
    Image.new("RGB", (200, 200), "gray").save(tmp_path / "gray.png")
    (tmp_path / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(2 << 20))
    return tmp_path


def png_of(src: str) -> Image.Image:
    assert src.startswith("data:image/png;base64,"), src[:40]
    return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))


def wait_new_after(page, old_src: str, timeout_ms: int = 5000) -> str:
    page.wait_for_function("old => document.getElementById('after').src !== old", arg=old_src, timeout=timeout_ms)
    return page.get_attribute("#after", "src")


def error_text(page) -> str:
    page.wait_for_selector("#error", state="visible", timeout=10000)
    return page.inner_text("#error")


def move_slider(page, attribute: str, value: float) -> float:
    """Set a slider as a person drags it; seconds until the page shows the new after-image."""
    old = page.get_attribute("#after", "src")
    t0 = time.perf_counter()
    page.eval_on_selector(f"#s-{attribute}", "(el, v) => { el.value = v; el.dispatchEvent(new Event('input', "
                                             "{bubbles: true})); }", value)
    new = wait_new_after(page, old)
    assert new != old and png_of(new).size == (64, 64)
    return time.perf_counter() - t0


def test_upload_slider_phrase_and_keep_in_chromium(web, browser, photos):
    url, _ = web
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    page.goto(url)
    page.wait_for_selector("#s-smile", state="attached")
    assert page.is_checked("#faithful")  # uploads are faithful unless this box is unticked
    page.uncheck("#faithful")  # the fast path here; test_faithful_upload_in_chromium takes the other
    page.set_input_files("#photo", str(photos / "astronaut.png"))
    page.wait_for_selector("#faces button.chosen img", timeout=20000)
    assert page.inner_text("#faces p") == "1 face found:"
    page.wait_for_function("document.getElementById('status').dataset.count >= 1", timeout=10000)
    before = page.get_attribute("#before", "src")
    after = page.get_attribute("#after", "src")
    assert png_of(before).size == png_of(after).size == (64, 64)

    # a slider move: input event -> debounce -> /api/edit -> new after-image
    timings = [move_slider(page, "smile", value) for value in (2.5, -2.5, 1.5)]
    assert page.inner_text("#inversion") == ""  # fast: no inversion report
    print(f"\nslider move -> new image in the browser: {', '.join(f'{1000 * t:.0f} ms' for t in timings)} "
          f"(debounce 120 ms included); page says: {page.inner_text('#status')}")
    assert max(timings) < 1.0, timings
    assert page.get_attribute("#before", "src") == before  # the face as found stays the before-image
    # a face of an uploaded photo: the whole photo re-rendered with the edit, beside the face
    assert page.is_visible("#in-photo") and png_of(page.get_attribute("#in-photo-img", "src")).size == (512, 512)
    assert page.eval_on_selector("#in-photo-img", "el => el.complete && el.naturalWidth") == 512
    assert page.inner_text("#photo-caption").startswith("in the photo (identity 0.")
    assert abs(float(page.inner_text("#v-smile")) - 1.5) < 0.1  # the slider snaps to its step

    old = page.get_attribute("#after", "src")
    page.fill("#phrase", "a big grin")
    with_phrase = wait_new_after(page, old)
    old = with_phrase
    page.check("#k-yaw")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('answered')")
    count = int(page.get_attribute("#status", "data-count"))
    page.select_option("#method", "crg")
    page.wait_for_function("n => Number(document.getElementById('status').dataset.count) > n", arg=count)
    assert page.get_attribute("#after", "src") != with_phrase
    assert not page.is_visible("#error")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    page.close()


def pixels(src: str) -> np.ndarray:
    return np.asarray(png_of(src).convert("RGB"), dtype=np.int16)


def test_faithful_upload_in_chromium(web, browser, photos):
    """The default upload: "inverting the face…" while the encoder optimises the face (seconds), the
    inversion report in the answer and on the page, a picture unlike the fast encoder's, and slider
    moves on the faithful face's latent id as fast as on any other."""
    url, _ = web
    status, fast = post(url + "api/photo", *multipart("a.png", (photos / "astronaut.png").read_bytes(),
                                                      fidelity="fast"))
    assert status == 200 and fast["faces"][0]["inversion"] is None and fast["fidelity"] == "fast", fast
    page = browser.new_page(viewport={"width": 1000, "height": 900})
    page.goto(url)
    page.wait_for_selector("#s-smile", state="attached")
    assert page.is_checked("#faithful") and "faithful (slower)" in page.inner_text("label:has(#faithful)")
    with page.expect_response("**/api/photo", timeout=120_000) as answer:
        page.set_input_files("#photo", str(photos / "astronaut.png"))
        page.wait_for_function("document.getElementById('faces').textContent === "
                               "'inverting the face… (a few seconds)'", timeout=5000)
    assert answer.value.status == 200
    found = answer.value.json()
    assert found["fidelity"] == "faithful" and len(found["faces"]) == 1
    report = found["faces"][0]["inversion"]
    assert report["steps"] > 0 and report["seconds"] > 0, report
    assert report["identity_after"] > report["identity_before"], report
    assert report["pixel_error_after"] < report["pixel_error_before"], report
    page.wait_for_selector("#faces button.chosen img", timeout=10000)
    assert page.inner_text("#inversion").startswith(
        f"faithful inversion: identity {report['identity_before']:.2f} → {report['identity_after']:.2f}")
    # the picture changed: the faithful face is not the fast encoder's look-alike
    faithful_face = found["faces"][0]["image"]
    assert page.get_attribute("#before", "src") == faithful_face
    change = float(np.abs(pixels(faithful_face) - pixels(fast["faces"][0]["image"])).mean())
    print(f"\nfaithful upload: {found['ms']} ms at the web service, inversion {report}; "
          f"mean change from the fast face {change:.1f} levels")
    assert change > 3, change
    # slider moves render the cached faithful face (its modulation) by latent id: fast, and they edit it
    page.wait_for_function("document.getElementById('status').dataset.count >= 1", timeout=10000)
    timings = [move_slider(page, "smile", value) for value in (2.5, -2.5)]
    print(f"slider moves on the faithful face: {', '.join(f'{1000 * t:.0f} ms' for t in timings)}")
    assert max(timings) < 1.0, timings
    assert page.get_attribute("#before", "src") == faithful_face  # the edit's original is the faithful face
    assert float(np.abs(pixels(page.get_attribute("#after", "src")) - pixels(faithful_face)).mean()) > 1
    assert not page.is_visible("#error")
    FAITHFUL_SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(FAITHFUL_SCREENSHOT), full_page=True)
    page.close()


def test_bad_uploads_show_a_sentence_in_the_page(web, browser, photos):
    url, log = web
    page = browser.new_page()
    page.goto(url)
    page.wait_for_selector("#s-smile", state="attached")
    cases = [("notes.txt", "This file is not an image"), ("gray.png", "No face found"),
             ("huge.png", "The file is too large")]
    for name, expected in cases:
        page.set_input_files("#photo", str(photos / name))
        text = error_text(page)
        assert text.startswith(expected), (name, text)
        assert "Traceback" not in page.content() and "File \"" not in text
        page.evaluate("document.getElementById('error').style.display = 'none'")
    page.close()
    # the 2 MiB upload was refused by the web service on its Content-Length: it never reached the gateway
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any('"POST /api/photo HTTP/1.1" 413' in e["msg"] for e in lines)


def post(url: str, body: bytes, content_type: str) -> tuple[int, dict]:
    req = urllib.request.Request(url, body, {"content-type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def multipart(name: str, data: bytes, **fields: str) -> tuple[bytes, str]:
    boundary = "facedit-test-boundary"
    body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode()
                    for k, v in fields.items())
    body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
             f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def announce_upload(url: str, size: int) -> tuple[int, dict]:
    """Only the headers of a `size`-byte upload: the web service answers on its Content-Length alone."""
    parsed = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=20)
    conn.putrequest("POST", "/api/photo")
    conn.putheader("content-type", "multipart/form-data; boundary=x")
    conn.putheader("content-length", str(size))
    conn.endheaders()
    resp = conn.getresponse()
    try:
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_the_json_api_and_its_openapi_description(web, photos):
    url, _ = web
    with urllib.request.urlopen(url + "openapi.json") as resp:
        spec = json.loads(resp.read())
    assert {"/api/photo", "/api/edit", "/api/random", "/api/attributes", "/healthz"} <= set(spec["paths"])
    with urllib.request.urlopen(url + "api/attributes") as resp:
        info = json.loads(resp.read())
    assert info["pack"] == "digiface64" and "smile" in info["attributes"] and "istrc" in info["methods"]

    status, found = post(url + "api/photo", *multipart("a.png", (photos / "astronaut.png").read_bytes(),
                                                       fidelity="fast"))
    assert status == 200 and len(found["faces"]) == 1, found
    latent_id = found["faces"][0]["latent_id"]
    edit = {"latent_id": latent_id, "edits": {"smile": 2}, "keep": ["yaw"], "text": "a big grin"}
    status, out = post(url + "api/edit", json.dumps(edit).encode(), "application/json")
    assert status == 200 and png_of(out["image"]).size == (64, 64) and out["image"] != out["original"]

    errors = [
        (post(url + "api/edit", json.dumps({**edit, "edits": {"smiel": 1}}).encode(), "application/json"),
         400, "Unknown attribute 'smiel'; pack digiface64 has"),
        (post(url + "api/edit", json.dumps({**edit, "latent_id": "gone"}).encode(), "application/json"),
         404, "This face is no longer remembered"),
        (post(url + "api/edit", json.dumps({**edit, "method": "magic"}).encode(), "application/json"),
         400, "Unknown method 'magic'"),
        (post(url + "api/edit", b"{not json", "application/json"), 422, "The request is not valid"),
        (post(url + "api/photo", *multipart("x.txt", b"hello")), 415, "This file is not an image"),
        (announce_upload(url, 3 << 20), 413, "The file is too large"),
        (post(url + "api/photo", *multipart("gray.png", (photos / "gray.png").read_bytes())), 400, "No face found"),
        (post(url + "api/photo", *multipart("a.png", b"\x89PNG\r\n\x1a\n", fidelity="exact")), 400,
         "Unknown fidelity 'exact': choose faithful or fast"),
    ]
    for (status, body), expected_status, expected in errors:
        assert status == expected_status and body["error"].startswith(expected), (status, body)
        assert "Traceback" not in json.dumps(body)
