"""REST API of `lookalike serve`, through FastAPI's test client, on real photos indexed
with the fast `raw-pixels` model. The library (Collection) is the oracle for answers."""

from __future__ import annotations

import asyncio
import io
import json
import math
import threading
import zlib
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from click.testing import CliRunner
from fastapi import FastAPI
from fastapi.testclient import TestClient

from lookalike import verify
from lookalike.collection import Collection
from lookalike.web.app import create_app
from lookalike.web.guards import LOOPBACK_HOSTS, is_loopback
from lookalike.web.thumbnails import ThumbnailCache
from lookalike.web.uploads import UploadLimits, decode_upload

MAX_BYTES = 2_000_000
MAX_PIXELS = 4_000_000
LIMITS = UploadLimits(max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)


# ----- fixtures ------------------------------------------------------------------------
def write_photos(arrays: dict[str, np.ndarray], folder: Path) -> dict[str, Path]:
    """The shared real photos in several formats, plus a near duplicate of chelsea (the cat)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sub").mkdir()
    # Mostly JPEG; a TIFF (browsers don't show it) and a PNG in a subfolder.
    special = {"camera": folder / "camera.tif", "coins": folder / "sub" / "coins.png"}
    out: dict[str, Path] = {}
    for name, arr in arrays.items():
        out[name] = special.get(name, folder / f"{name}.jpg")
        Image.fromarray(arr).save(out[name], quality=92)  # quality: JPEG only
    cat = Image.fromarray(arrays["chelsea"])
    out["chelsea-copy"] = folder / "chelsea-copy.png"
    cat.resize((cat.width * 9 // 10, cat.height * 9 // 10), Image.Resampling.LANCZOS).save(
        out["chelsea-copy"]
    )
    return out


def jpeg_bytes(image: Image.Image, quality: int = 85, **kw: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality, **kw)
    return buf.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def cat_query() -> Image.Image:
    """Chelsea cropped and shrunk: not a file of the collection, but clearly that cat."""
    from skimage import data

    cat = Image.fromarray(data.chelsea())
    return cat.crop((15, 10, cat.width - 15, cat.height - 10)).resize((300, 196))


@pytest.fixture(scope="module")
def files(
    tmp_path_factory: pytest.TempPathFactory, photo_arrays: dict[str, np.ndarray]
) -> dict[str, Path]:
    return write_photos(photo_arrays, tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def web_db(tmp_path_factory: pytest.TempPathFactory, files: dict[str, Path]) -> Path:
    root = tmp_path_factory.mktemp("db")
    with Collection.open(root, model="raw-pixels", create=True) as col:
        report = col.index([files["chelsea"].parent])
    assert report.added == len(files) and not report.skipped
    return root


@pytest.fixture(scope="module")
def col(web_db: Path) -> Any:
    with Collection.open(web_db) as collection:
        yield collection


@pytest.fixture(scope="module")
def thumbs(tmp_path_factory: pytest.TempPathFactory) -> ThumbnailCache:
    return ThumbnailCache(tmp_path_factory.mktemp("thumbs"))


@pytest.fixture(scope="module")
def app(web_db: Path, thumbs: ThumbnailCache) -> FastAPI:
    return create_app(web_db, thumbnails=thumbs, limits=LIMITS)


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Any:
    with TestClient(app) as test_client:
        yield test_client


def ids_by_name(col: Collection) -> dict[str, int]:
    return {Path(r.path).stem: r.id for r in col.records(0, 1000)}


def upload(client: TestClient, content: bytes, name: str = "query.jpg", **form: Any) -> Any:
    files = {"file": (name, content, "application/octet-stream")}
    return client.post("/api/search", files=files, data={k: str(v) for k, v in form.items()})


def assert_error(response: Any, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    assert isinstance(message, str) and message
    for word in words:
        assert word in message, message


# ----- search ----------------------------------------------------------------------------
def test_upload_search_finds_the_cat_and_matches_the_library(
    client: TestClient, col: Collection, files: dict[str, Path]
) -> None:
    content = jpeg_bytes(cat_query())
    response = upload(client, content, k=5)
    assert response.status_code == 200, response.text
    body = response.json()
    # Oracle: the library searching with the image decoded the same way.
    image = decode_upload(content, UploadLimits(), min_side=col.embedder.draft_size)
    expected = col.search([image], k=5)[0]
    expected.query = "query.jpg"
    assert body == [expected.to_json(with_id=True)]
    top2 = {Path(hit["path"]).name for hit in body[0]["results"][:2]}
    assert top2 == {files["chelsea"].name, files["chelsea-copy"].name}


def test_results_have_the_cli_shape_plus_ids(client: TestClient, col: Collection) -> None:
    body = upload(client, jpeg_bytes(cat_query()), k=7).json()
    assert len(body) == 1 and set(body[0]) == {"query", "results"}
    hits = body[0]["results"]
    assert [h["rank"] for h in hits] == list(range(1, 8))
    assert all(set(h) == {"rank", "path", "score", "id"} for h in hits)
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    for hit in hits:
        assert col.get(hit["id"]).path == hit["path"]


def test_euclidean_adds_the_distance(client: TestClient) -> None:
    hits = upload(client, jpeg_bytes(cat_query()), k=3, metric="euclidean").json()[0]["results"]
    for hit in hits:
        assert hit["distance"] == pytest.approx(math.sqrt(2 - 2 * hit["score"]), abs=1e-5)


def test_more_like_this_by_id(client: TestClient, col: Collection) -> None:
    cat = ids_by_name(col)["chelsea"]
    response = client.get("/api/search", params={"id": cat, "k": 4})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == [col.search_by_id([cat], k=4)[0].to_json(with_id=True)]
    assert body[0]["query"] == col.get(cat).path
    ids = [h["id"] for h in body[0]["results"]]
    assert cat not in ids
    assert ids[0] == ids_by_name(col)["chelsea-copy"]


def test_rerank_parameter(client: TestClient, col: Collection) -> None:
    from lookalike.reranking import Rerank

    cat = ids_by_name(col)["chelsea"]
    response = client.get("/api/search", params={"id": cat, "k": 4, "rerank": "qe"})
    assert response.status_code == 200, response.text
    assert response.json() == [
        col.search_by_id([cat], k=4, rerank=Rerank("qe"))[0].to_json(with_id=True)
    ]
    posted = upload(client, jpeg_bytes(cat_query()), k=3, rerank="kr:k1=3")
    assert posted.status_code == 200, posted.text
    checked = upload(client, jpeg_bytes(cat_query()), k=3, rerank="verify")
    assert checked.status_code == 200, checked.text
    # The cat query is a copy of chelsea: the geometric check passes it, so it leads.
    assert Path(checked.json()[0]["results"][0]["path"]).stem.startswith("chelsea")
    by_id = client.get("/api/search", params={"id": cat, "k": 3, "rerank": "verify"})
    assert by_id.status_code == 200 and cat not in [h["id"] for h in by_id.json()[0]["results"]]
    assert_error(
        client.get("/api/search", params={"id": cat, "rerank": "magic"}), 422, "re-ranking"
    )
    files = {"file": ("q.jpg", jpeg_bytes(cat_query()), "image/jpeg")}
    assert_error(client.post("/api/search", files=files, data={"rerank": "qe:n=0"}), 422, "n")


@pytest.mark.skipif(not verify.available(), reason="needs OpenCV (the verify extra)")
def test_verify_compares_files_without_the_store_lock(
    app: FastAPI, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store lock is held for each store read, not while verify compares image files
    (~0.2 s a search), so thumbnails and browsing are not held up meanwhile: for an
    upload and for "more like this" by id."""
    service = app.state.service
    lock = service._store_lock
    held: dict[str, list[bool]] = {"search": [], "check": []}
    backend = service.collection.backend
    search, check = backend.search, verify.Verifier.check

    def watched_search(*args: Any, **kwargs: Any) -> Any:
        held["search"].append(lock.locked())
        return search(*args, **kwargs)

    def watched_check(self: Any, *args: Any, **kwargs: Any) -> Any:
        held["check"].append(lock.locked())
        return check(self, *args, **kwargs)

    monkeypatch.setattr(backend, "search", watched_search)
    monkeypatch.setattr(verify.Verifier, "check", watched_check)
    checked = upload(client, jpeg_bytes(cat_query()), k=3, rerank="verify")
    assert checked.status_code == 200, checked.text
    assert Path(checked.json()[0]["results"][0]["path"]).stem.startswith("chelsea")
    assert held["search"] and all(held["search"])  # store reads: under the lock
    assert held["check"] and not any(held["check"])  # file comparisons: without it
    held["search"].clear()
    held["check"].clear()
    cat = ids_by_name(service.collection)["chelsea"]
    by_id = client.get("/api/search", params={"id": cat, "k": 3, "rerank": "verify"})
    assert by_id.status_code == 200, by_id.text
    assert cat not in [h["id"] for h in by_id.json()[0]["results"]]
    assert held["search"] and all(held["search"])
    assert held["check"] and not any(held["check"])
    missing = client.get("/api/search", params={"id": 10**9, "k": 3, "rerank": "verify"})
    assert missing.status_code == 404


@pytest.mark.skipif(not verify.available(), reason="needs OpenCV (the verify extra)")
def test_verified_uploads_reuse_the_stored_files_features(
    app: FastAPI, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's one collection keeps its files' SIFT features: a second verified
    upload computes only its own (the first one's shortlist stays computed)."""
    app.state.service.collection._verify_files = verify.FeatureCache()  # as a new server
    computed: list[str] = []
    extract = verify.Verifier._extract

    def counted(self: Any, source: Any) -> Any:
        computed.append(source if isinstance(source, str) else "<upload>")
        return extract(self, source)

    monkeypatch.setattr(verify.Verifier, "_extract", counted)
    first = upload(client, jpeg_bytes(cat_query()), k=3, rerank="verify")
    assert first.status_code == 200, first.text
    assert computed.count("<upload>") == 1 and len(computed) > 1
    computed.clear()
    second = upload(client, jpeg_bytes(cat_query()), k=3, rerank="verify")
    assert second.status_code == 200, second.text
    assert computed == ["<upload>"]
    assert second.json()[0]["results"] == first.json()[0]["results"]


def test_k_larger_than_the_collection(client: TestClient, col: Collection) -> None:
    n = col.count()
    assert len(upload(client, jpeg_bytes(cat_query()), k=100).json()[0]["results"]) == n
    some_id = col.records(0, 1)[0].id
    by_id = client.get("/api/search", params={"id": some_id, "k": 100}).json()
    assert len(by_id[0]["results"]) == n - 1


def test_upload_is_decoded_like_indexed_files(client: TestClient, col: Collection) -> None:
    """EXIF rotation, alpha, grey, palette and animation all give a searchable image."""
    cat = ids_by_name(col)["chelsea"]
    # Pixels stored sideways, with an EXIF tag saying "rotate back": still the cat on top.
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    sideways = cat_query().transpose(Image.Transpose.ROTATE_90)
    hits = upload(client, jpeg_bytes(sideways, exif=exif.tobytes()), k=1).json()[0]["results"]
    assert hits[0]["id"] in (cat, ids_by_name(col)["chelsea-copy"])
    rgba = cat_query().convert("RGBA")
    grey = cat_query().convert("L")
    palette = cat_query().convert("P")
    frames = [cat_query(), cat_query().transpose(Image.Transpose.FLIP_TOP_BOTTOM)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    webp = io.BytesIO()
    cat_query().save(webp, "WEBP")
    for content in (
        png_bytes(rgba),
        png_bytes(grey),
        png_bytes(palette),
        gif.getvalue(),
        webp.getvalue(),
    ):
        response = upload(client, content, name="q", k=2)
        assert response.status_code == 200, response.text
        assert len(response.json()[0]["results"]) == 2


def test_upload_name_is_only_a_label(client: TestClient) -> None:
    response = upload(client, jpeg_bytes(cat_query()), name="../../etc/passwd", k=1)
    assert response.status_code == 200
    assert response.json()[0]["query"] == "passwd"


# ----- bad uploads -------------------------------------------------------------------------
def png_claiming_size(width: int, height: int) -> bytes:
    """A well-formed PNG header announcing a huge image (a decompression bomb's shape)."""
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    chunk = b"IHDR" + ihdr
    crc = zlib.crc32(chunk).to_bytes(4, "big")
    idat = zlib.compress(b"\x00" * 64)
    idat_chunk = b"IDAT" + idat
    return (
        b"\x89PNG\r\n\x1a\n"
        + len(ihdr).to_bytes(4, "big")
        + chunk
        + crc
        + len(idat).to_bytes(4, "big")
        + idat_chunk
        + zlib.crc32(idat_chunk).to_bytes(4, "big")
        + b"\x00\x00\x00\x00IEND\xaeB`\x82"
    )


SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


@pytest.mark.parametrize(
    ("make", "status", "words"),
    [
        pytest.param(lambda: b"hello, I am text", 415, ["not an image"], id="text"),
        pytest.param(lambda: SVG, 415, ["not an image"], id="svg"),
        pytest.param(lambda: b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", 415, ["not an image"], id="pdf"),
        pytest.param(lambda: jpeg_bytes(cat_query())[:3000], 400, ["damaged"], id="truncated"),
        pytest.param(lambda: b"", 400, ["empty"], id="empty"),
        pytest.param(
            lambda: png_bytes(Image.new("RGB", (2500, 2000), "white")),
            413,
            ["pixels"],
            id="too-many-pixels",
        ),
        pytest.param(lambda: png_claiming_size(100_000, 100_000), 413, [], id="bomb-header"),
        pytest.param(
            # Just over the file limit but within the multipart allowance: refused on read.
            lambda: jpeg_bytes(cat_query()) + b"\x00" * MAX_BYTES,
            413,
            ["bytes"],
            id="over-max-bytes",
        ),
        pytest.param(
            # Far over: refused from Content-Length before the body is read.
            lambda: b"\xff\xd8\xff" + b"\x00" * (MAX_BYTES + 200_000),
            413,
            ["bytes"],
            id="body-too-large",
        ),
    ],
)
def test_bad_uploads_get_a_clear_4xx(
    client: TestClient, make: Any, status: int, words: list[str]
) -> None:
    assert_error(upload(client, make(), name="bad.jpg"), status, *words)


def test_chunked_upload_over_the_limit_is_cut_off(client: TestClient) -> None:
    """No Content-Length (chunked): the bytes are counted as they arrive."""
    boundary = "lookalike-test-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()

    def chunks() -> Any:
        yield head + b"\xff\xd8\xff"
        for _ in range(40):
            yield b"\x00" * 65536  # 2.6 MB in all, over the 2 MB + allowance
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post(
        "/api/search",
        content=chunks(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert_error(response, 413, "bytes")


@pytest.mark.parametrize(
    ("form", "words"),
    [
        ({"k": "0"}, ["'k'"]),
        ({"k": "101"}, ["'k'"]),
        ({"k": "many"}, ["'k'"]),
        ({"metric": "manhattan"}, ["'metric'"]),
    ],
)
def test_bad_form_fields(client: TestClient, form: dict[str, str], words: list[str]) -> None:
    files = {"file": ("q.jpg", jpeg_bytes(cat_query()), "image/jpeg")}
    assert_error(client.post("/api/search", files=files, data=form), 422, *words)


def test_missing_file_field(client: TestClient) -> None:
    assert_error(client.post("/api/search", data={"k": "3"}), 422, "'file'")


@pytest.mark.parametrize("query", ["k=0", "k=101", "metric=manhattan", "id=abc", "", "id=1&k=x"])
def test_bad_search_by_id_parameters(client: TestClient, query: str) -> None:
    assert_error(client.get(f"/api/search?{query}"), 422)


# ----- images and thumbnails ---------------------------------------------------------------
def test_thumbnail_is_a_small_jpeg_cached_on_disk(
    client: TestClient, col: Collection, thumbs: ThumbnailCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = col.get(ids_by_name(col)["rocket"])
    response = client.get(f"/api/images/{record.id}/thumbnail")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(response.content)) as im:
        assert im.format == "JPEG" and max(im.size) == 256
        assert im.size[0] / im.size[1] == pytest.approx(640 / 427, rel=0.02)  # rocket
    cached = thumbs.path_for(record, 256)
    assert cached.is_file() and str(record.id) in cached.name and record.hash in cached.name
    assert cached.read_bytes() == response.content

    # Served from the disk cache from now on: the original is not read again.
    def no_reading(*_args: Any, **_kw: Any) -> Any:
        raise AssertionError("original decoded again")

    monkeypatch.setattr("lookalike.web.thumbnails.load_image", no_reading)
    again = client.get(f"/api/images/{record.id}/thumbnail")
    assert again.status_code == 200 and again.content == response.content


def test_thumbnail_sizes(client: TestClient, col: Collection) -> None:
    image_id = ids_by_name(col)["astronaut"]
    small = client.get(f"/api/images/{image_id}/thumbnail", params={"size": 128})
    with Image.open(io.BytesIO(small.content)) as im:
        assert im.size == (128, 128)
    assert_error(client.get(f"/api/images/{image_id}/thumbnail?size=4000"), 422, "size")


def test_full_image_is_the_file_itself(
    client: TestClient, col: Collection, files: dict[str, Path]
) -> None:
    names = ids_by_name(col)
    response = client.get(f"/api/images/{names['coffee']}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.content == files["coffee"].read_bytes()
    png = client.get(f"/api/images/{names['coins']}")
    assert png.headers["content-type"] == "image/png"
    assert png.content == files["coins"].read_bytes()


def test_formats_browsers_cannot_show_come_as_jpeg(
    client: TestClient, col: Collection, files: dict[str, Path]
) -> None:
    response = client.get(f"/api/images/{ids_by_name(col)['camera']}")  # a TIFF
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(response.content)) as im:
        assert im.format == "JPEG" and im.size == Image.open(files["camera"]).size


@pytest.mark.parametrize(
    "url",
    [
        "/api/images/999999",
        "/api/images/999999/thumbnail",
        "/api/images/-1",
        "/api/search?id=999999",
    ],
)
def test_unknown_ids_are_404(client: TestClient, url: str) -> None:
    assert_error(client.get(url), 404, "no image with id")


def test_non_integer_ids_are_refused(client: TestClient) -> None:
    assert_error(client.get("/api/images/abc"), 422, "image_id")
    assert_error(client.get("/api/images/1.5/thumbnail"), 422, "image_id")


def test_files_gone_or_replaced_after_indexing(tmp_path: Path, photos: dict[str, Path]) -> None:
    folder = photos["astronaut"].parent
    with Collection.open(tmp_path / "db", model="raw-pixels", create=True) as collection:
        collection.index([folder])
        ids = ids_by_name(collection)
    (folder / "astronaut.jpg").unlink()
    (folder / "coffee.jpg").write_text("root:x:0:0:root:/root:/bin/bash\n")
    app = create_app(tmp_path / "db", thumbnails=ThumbnailCache(tmp_path / "thumbs"))
    with TestClient(app) as client:
        for url in (f"/api/images/{ids['astronaut']}", f"/api/images/{ids['astronaut']}/thumbnail"):
            assert_error(client.get(url), 404, "astronaut.jpg")
        for url in (f"/api/images/{ids['coffee']}", f"/api/images/{ids['coffee']}/thumbnail"):
            response = client.get(url)
            assert_error(response, 404, "coffee.jpg")
            assert "root:x" not in response.text
        assert client.get(f"/api/images/{ids['rocket']}").status_code == 200


def test_images_indexed_while_serving_are_found(tmp_path: Path, photos: dict[str, Path]) -> None:
    """`lookalike index` in another process while the server runs: no restart needed."""
    first, later = tmp_path / "first", tmp_path / "later"
    first.mkdir()
    later.mkdir()
    for n, path in enumerate(sorted(photos.values())):
        path.rename((first if n % 2 else later) / path.name)
    with Collection.open(tmp_path / "db", model="raw-pixels", create=True) as collection:
        collection.index([first])
    app = create_app(tmp_path / "db", thumbnails=ThumbnailCache(tmp_path / "thumbs"))
    newcomer = sorted(later.iterdir())[0]
    with TestClient(app) as client:
        before = upload(client, newcomer.read_bytes(), k=3).json()[0]["results"]
        assert all(Path(h["path"]).parent == first for h in before)
        with Collection.open(tmp_path / "db") as writer:  # as another process would
            writer.index([later])
            total = writer.count()
        after = upload(client, newcomer.read_bytes(), k=3)
        assert after.status_code == 200, after.text
        top = after.json()[0]["results"][0]
        assert top["path"] == str(newcomer) and top["score"] > 0.99
        assert client.get("/api/images").json()["total"] == total
        by_id = client.get("/api/search", params={"id": top["id"], "k": 2})
        assert by_id.status_code == 200 and by_id.json()[0]["query"] == str(newcomer)


# ----- path traversal ------------------------------------------------------------------------
def raw_get(app: FastAPI, raw_path: bytes) -> tuple[int, bytes]:
    """Call the ASGI app with a request target exactly as a client sent it (HTTP clients
    normalise '..' away; a hostile one doesn't). Mirrors what uvicorn puts in the scope."""
    from urllib.parse import unquote

    path, _, query = raw_path.partition(b"?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": unquote(path.decode("ascii")),
        "raw_path": path,
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    sent: list[MutableMapping[str, Any]] = []
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Future()  # the client never disconnects; cancelled when done
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


@pytest.mark.parametrize(
    "raw",
    [
        b"/api/images/../../../../etc/passwd",
        b"/api/images/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        b"/api/images/%2e%2e/thumbnail",
        b"/api/images/..",
        b"/api/images/%2Fetc%2Fpasswd",
        b"/static/../../../../etc/passwd",
        b"/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        b"/static/..%2Fapp.py",
        b"/static/%2e%2e/app.py",
        b"/static//etc/passwd",
        b"/../../../../etc/passwd",
        b"/api/search?id=../../etc/passwd",
    ],
)
def test_traversal_attempts_get_nothing(app: FastAPI, raw: bytes) -> None:
    status, body = raw_get(app, raw)
    assert status in (404, 422), (status, body[:200])
    assert b"root:" not in body and b"def create_app" not in body
    assert "error" in json.loads(body)


def test_static_files_are_served(app: FastAPI) -> None:
    # The traversal 404s above mean something only if the real files are reachable.
    status, body = raw_get(app, b"/static/app.js")
    assert status == 200 and b"more like" in body.lower()


# ----- collection pages --------------------------------------------------------------------
def test_duplicates_group_the_cat_copies(client: TestClient, col: Collection) -> None:
    response = client.get("/api/duplicates", params={"threshold": 0.95})
    assert response.status_code == 200
    body = response.json()
    expected = [g.to_json(with_id=True) for g in col.duplicates(threshold=0.95)]
    assert body == expected
    for group in body:
        assert group["keep"] in group["paths"]
        assert sorted(m["id"] for m in group["members"]) == group["ids"]
    names = ids_by_name(col)
    assert {names["chelsea"], names["chelsea-copy"]} in [set(g["ids"]) for g in body]
    for group in body:
        assert [col.get(i).path for i in group["ids"]] == group["paths"]
    assert_error(client.get("/api/duplicates", params={"threshold": 2}), 422, "threshold")
    # verify=false: the CNN score alone, as `duplicates --no-verify`.
    plain = client.get("/api/duplicates", params={"threshold": 0.9, "verify": "false"})
    assert plain.json() == [g.to_json(with_id=True) for g in col.duplicates(0.9, verify=False)]
    assert all(not m["verified"] for g in plain.json() for m in g["members"])


def test_info(client: TestClient, col: Collection) -> None:
    info = client.get("/api/info").json()
    assert info["count"] == col.count() and info["model"] == "raw-pixels"
    assert info["dim"] == 768
    assert (info["precision"], info["runtime"]) == ("fp32", "numpy")


def test_browse_pages(client: TestClient, col: Collection) -> None:
    first = client.get("/api/images", params={"offset": 0, "limit": 3}).json()
    assert first["total"] == col.count()
    assert [i["id"] for i in first["images"]] == [r.id for r in col.records(0, 3)]
    rest = client.get("/api/images", params={"offset": 3, "limit": 500}).json()
    assert len(first["images"]) + len(rest["images"]) == col.count()
    assert client.get("/api/images", params={"offset": col.count()}).json()["images"] == []
    assert_error(client.get("/api/images", params={"limit": 0}), 422, "limit")


def test_page_docs_and_unknown_routes(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/static/app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/api/search",
        "/api/images/{image_id}",
        "/api/images/{image_id}/thumbnail",
        "/api/duplicates",
        "/api/info",
        "/api/images",
    } <= set(paths)
    assert_error(client.get("/api/nothing-here"), 404)


def test_host_check_when_bound_to_loopback(web_db: Path, thumbs: ThumbnailCache) -> None:
    app = create_app(web_db, thumbnails=thumbs, allowed_hosts=LOOPBACK_HOSTS, warm_up=False)
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        assert client.get("/api/info").status_code == 200
        for host in ("localhost:8000", "[::1]:8000", "127.0.0.1"):
            assert client.get("/api/info", headers={"host": host}).status_code == 200
        for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example"):
            assert_error(client.get("/api/info", headers={"host": host}), 400, "not allowed")


def test_concurrent_requests_agree(client: TestClient, col: Collection) -> None:
    content = jpeg_bytes(cat_query())
    reference = upload(client, content, k=5).json()
    image_ids = [r.id for r in col.records(0, 100)]
    failures: list[str] = []

    def worker(n: int) -> None:
        for i in range(4):
            got = upload(client, content, k=5)
            if got.status_code != 200 or got.json() != reference:
                failures.append(f"search {n}/{i}: {got.status_code}")
            thumb = client.get(f"/api/images/{image_ids[(n + i) % len(image_ids)]}/thumbnail")
            if thumb.status_code != 200:
                failures.append(f"thumbnail {n}/{i}: {thumb.status_code}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


# ----- the serve command ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.5.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("myhost.example", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(("host", "warns"), [("127.0.0.1", False), ("0.0.0.0", True)])
def test_serve_command_binds_and_warns(
    web_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str, warns: bool
) -> None:
    import uvicorn

    from lookalike.cli import cli

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append({"app": app, **kw}))
    monkeypatch.setenv("LOOKALIKE_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(
        cli, ["serve", "--db", str(web_db), "--host", host, "--port", "8123"]
    )
    assert result.exit_code == 0, result.output
    assert len(calls) == 1 and calls[0]["host"] == host and calls[0]["port"] == 8123
    assert isinstance(calls[0]["app"], FastAPI)
    assert ("warning" in result.stderr) is warns
    # Bound to loopback, the app only answers to loopback names.
    with TestClient(calls[0]["app"], base_url="http://evil.example") as client:
        assert client.get("/api/info").status_code == (200 if warns else 400)


def test_serve_command_default_binds_loopback(
    web_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    from lookalike.cli import cli

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    result = CliRunner().invoke(cli, ["serve", "--db", str(web_db)])
    assert result.exit_code == 0, result.output
    assert calls[0]["host"] == "127.0.0.1" and calls[0]["port"] == 8000


def test_serve_command_without_a_collection(tmp_path: Path) -> None:
    from lookalike.cli import cli

    result = CliRunner().invoke(cli, ["serve", "--db", str(tmp_path / "nothing")])
    assert result.exit_code == 1
    assert "no collection here" in result.stderr
