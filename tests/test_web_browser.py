"""End to end: `lookalike serve` in its own process, driven by headless Chromium.

Needs Debian's chromium (scripts/install-browser.sh installs it) and the Playwright
Python package (dev extra); Playwright's own browser download is never used.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from lookalike.collection import Collection

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
K = 5

pytestmark = pytest.mark.browser


def write_photos(arrays: dict[str, np.ndarray], folder: Path) -> None:
    """The shared real photos as JPEGs, plus a near duplicate of chelsea (the cat)."""
    folder.mkdir(parents=True)
    for name, arr in arrays.items():
        Image.fromarray(arr).save(folder / f"{name}.jpg", quality=92)
    cat = Image.fromarray(arrays["chelsea"])
    cat.resize((cat.width * 9 // 10, cat.height * 9 // 10)).save(folder / "chelsea-copy.png")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, photo_arrays: dict[str, np.ndarray]
) -> Iterator[dict[str, Any]]:
    """A collection of real photos and `lookalike serve` on a free loopback port."""
    root = tmp_path_factory.mktemp("web-e2e")
    write_photos(photo_arrays, root / "photos")
    with Collection.open(root / "db", model="raw-pixels", create=True) as col:
        col.index([root / "photos"])
        count = col.count()
    from skimage import data

    query = root / "my cat.jpg"  # not in the collection
    cat = Image.fromarray(data.chelsea())
    cat.crop((15, 10, cat.width - 15, cat.height - 10)).resize((300, 196)).save(query)

    port = free_port()
    log = open(root / "server.log", "w+")  # noqa: SIM115 - closed below
    env = {**os.environ, "LOOKALIKE_CACHE": str(root / "cache")}
    command = [sys.executable, "-m", "lookalike", "serve", "--db", str(root / "db")]
    proc = subprocess.Popen(
        [*command, "--port", str(port), "--log-level", "warning"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        _wait_until_up(port, proc, root / "server.log")
        yield {
            "url": f"http://127.0.0.1:{port}",
            "port": port,
            "query": query,
            "count": count,
            "photos": root / "photos",
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _wait_until_up(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"lookalike serve exited ({proc.returncode}):\n{log.read_text()}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/api/info")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"lookalike serve did not answer within 90 s:\n{log.read_text()}")


def raw_request(port: int, target: str, host: str = "127.0.0.1") -> tuple[int, bytes]:
    """One request sent byte for byte (HTTP libraries would normalise '..' away)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize(
    "target",
    [
        "/api/images/../../../../etc/passwd",
        "/api/images/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/static/../../../../../etc/passwd",
        "/static/..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "/static/%2e%2e/app.py",
    ],
)
def test_traversal_over_a_real_socket(server: dict[str, Any], target: str) -> None:
    status, body = raw_request(server["port"], target)
    assert status in (404, 422), (status, body[:200])
    assert b"root:" not in body and b"create_app" not in body


def test_foreign_host_header_is_refused(server: dict[str, Any]) -> None:
    assert raw_request(server["port"], "/api/info", host="rebind.example")[0] == 400
    assert raw_request(server["port"], "/api/info", host=f"localhost:{server['port']}")[0] == 200


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} missing: install Debian's chromium (scripts/install-browser.sh)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def problems() -> list[str]:
    """Script errors and console errors of the page; a test may drop the ones it expects."""
    return []


@pytest.fixture
def page(browser: Any, server: dict[str, Any], problems: list[str]) -> Iterator[Any]:
    context = browser.new_context(base_url=server["url"])
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on(
        "response",
        lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None,
    )
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None
        ),
    )
    yield page
    context.close()
    # Script errors or Content-Security-Policy violations would show up here.
    assert problems == []


def scores_of(page: Any) -> list[float]:
    return [float(s) for s in page.locator(".result-card .score").all_inner_texts()]


def all_images_loaded(page: Any, selector: str) -> None:
    page.wait_for_function(
        "sel => { const imgs = [...document.querySelectorAll(sel)];"
        " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); }",
        arg=selector,
    )


def test_upload_a_photo_then_more_like_this(page: Any, server: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    page.goto("/")
    page.fill("#k", str(K))
    page.set_input_files("#file-input", str(server["query"]))

    cards = page.locator(".result-card")
    expect(cards).to_have_count(K)
    expect(page.locator("#query-title")).to_have_text("my cat.jpg")
    scores = scores_of(page)
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    names = page.locator(".result-card .name").all_inner_texts()
    assert set(names[:2]) == {"chelsea.jpg", "chelsea-copy.png"}
    all_images_loaded(page, ".result-card img")

    # Click the best hit's thumbnail: "more like this" for that collection image.
    clicked = cards.first.get_attribute("data-id")
    cards.first.locator("a.thumb").click()
    expect(page).to_have_url(f"{server['url']}/#/like/{clicked}")
    expect(page.locator("#query-title")).to_have_text(f"More like {names[0]}")
    expect(cards).to_have_count(K)
    new_ids = [cards.nth(i).get_attribute("data-id") for i in range(K)]
    assert clicked not in new_ids
    # The other copy of the cat is the closest to the one clicked.
    assert page.locator(".result-card .name").first.inner_text() == names[1]
    new_scores = scores_of(page)
    assert new_scores == sorted(new_scores, reverse=True)
    all_images_loaded(page, ".result-card img, #query-image")


def test_copies_and_crops_first(page: Any, server: dict[str, Any], tmp_path: Path) -> None:
    """A corner crop of a photo: raw pixels alone rank other photos first; with the box
    ticked the server verifies the shortlist and the photo it was cut from leads."""
    pytest.importorskip("cv2")
    from playwright.sync_api import expect

    crop = tmp_path / "corner.jpg"
    photo = Image.open(server["photos"] / "astronaut.jpg")
    photo.crop((0, 0, photo.width * 2 // 5, photo.height * 2 // 5)).save(crop)
    page.goto("/")
    page.set_input_files("#file-input", str(crop))
    cards = page.locator(".result-card")
    expect(cards).not_to_have_count(0)
    plain = page.locator(".result-card .name").first.inner_text()
    page.check("#copies-first")
    page.set_input_files("#file-input", str(crop))
    expect(page.locator(".result-card .name").first).to_have_text("astronaut.jpg")
    assert plain != "astronaut.jpg"  # the box is what changed the answer
    # "More like this" of the best hit goes through the same check (rerank=verify by id).
    cards.first.locator("a.thumb").click()
    expect(page.locator("#query-title")).to_have_text("More like astronaut.jpg")
    expect(cards).not_to_have_count(0)


def test_bad_upload_shows_the_error(page: Any, problems: list[str], tmp_path: Path) -> None:
    from playwright.sync_api import expect

    fake = tmp_path / "notes.jpg"
    fake.write_text("not a picture")
    page.goto("/")
    page.set_input_files("#file-input", str(fake))
    expect(page.locator("#search-status.error")).to_contain_text("not an image")
    expect(page.locator(".result-card")).to_have_count(0)
    # Chromium logs the refused request (415) on the console: that one is expected.
    problems[:] = [p for p in problems if "status of 415" not in p and "HTTP 415" not in p]


def test_browse_duplicates_and_info_pages(page: Any, server: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    page.goto("/#/browse")
    expect(page.locator("#browse-grid .card")).to_have_count(server["count"])
    expect(page.locator("#page-label")).to_contain_text(f"{server['count']} images")
    all_images_loaded(page, "#browse-grid img")

    page.click("nav a[data-view=duplicates]")
    page.click("#dup-form button")
    group = page.locator("#dup-groups .group").first
    expect(group).to_be_visible()
    assert {"chelsea.jpg", "chelsea-copy.png"} <= set(group.locator(".name").all_inner_texts())
    expect(group.locator(".card.keeper .keep")).to_have_count(1)  # one suggested keeper
    expect(group.locator(".card .score").first).to_have_text("1.0000")  # the representative

    page.click("nav a[data-view=info]")
    expect(page.locator("#info-table")).to_contain_text("raw-pixels")
    expect(page.locator("#summary")).to_contain_text(f"{server['count']} images")
