"""The FastAPI app: routes that parse requests and format answers; the work happens in
the library (Collection) through CollectionService.

Images are only ever served by collection id (an int path parameter), from the path
stored in the collection; no path from a request reaches the file system.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from lookalike import __version__
from lookalike.collection import Collection
from lookalike.errors import ImageReadError, LookalikeError, RerankError
from lookalike.models import ModelOptions
from lookalike.reranking import Rerank, parse_rerank
from lookalike.store import ImageRecord
from lookalike.web.guards import (
    BodyLimit,
    HostCheck,
    OriginCheck,
    SafeJSONResponse,
    SecurityHeaders,
)
from lookalike.web.originals import browser_media_type
from lookalike.web.schemas import (
    DuplicateGroupOut,
    ErrorOut,
    ImagePageOut,
    QueryResultOut,
)
from lookalike.web.service import CollectionService
from lookalike.web.thumbnails import PREVIEW_SIZE, THUMB_SIZES, ThumbnailCache
from lookalike.web.uploads import (
    UnsupportedImageError,
    UploadError,
    UploadLimits,
    UploadTooLargeError,
    decode_upload,
    read_limited,
)

STATIC = Path(__file__).parent / "static"
MAX_K = 100
MAX_PAGE = 500
# Multipart framing and the small form fields around the file.
FORM_OVERHEAD = 64 * 1024
# The page loads nothing from elsewhere; uploads are previewed from blob: URLs.
PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)

Metric = Literal["cosine", "euclidean"]
K = Annotated[int, Query(ge=1, le=MAX_K, description="number of results")]
RERANK_HELP = (
    "re-ranking of the shortlist: none, qe, dba, dba+qe, kr or verify (copies and crops "
    "first, by SIFT + RANSAC; slow), optionally with settings (qe:n=3,alpha=3); scores stay "
    "the cosine similarity to the query"
)
MAX_UNDER = 4096
UNDER_HELP = "only images at or below this folder (absolute, as indexed)"
# SQLite integers are 64-bit: a larger id or offset is a 422, not an OverflowError (500).
INT64_MAX = 2**63 - 1
ImageId = Annotated[int, PathParam(ge=-INT64_MAX - 1, le=INT64_MAX)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut} for status in (400, 404, 413, 415, 422)
}


def create_app(
    db: str | os.PathLike[str] | None,
    *,
    model_options: ModelOptions | None = None,
    adapter: str | os.PathLike[str] | None = None,
    thumbnails: ThumbnailCache | None = None,
    limits: UploadLimits | None = None,
    allowed_hosts: Sequence[str] | None = None,
    warm_up: bool = True,
) -> FastAPI:
    """The web app over the collection at ``db`` (None: the default collection).

    ``allowed_hosts``: Host header names to answer (None: any); ``lookalike serve`` sets
    the loopback names when bound to loopback. ``warm_up`` builds the model now.
    """
    limits = limits or UploadLimits()
    thumbs = thumbnails or ThumbnailCache()

    def open_collection() -> Collection:
        return Collection.open(db, model_options=model_options, adapter=adapter)

    service = CollectionService(open_collection(), reopen=open_collection)
    try:
        if warm_up:
            service.warm_up()
    except BaseException:
        service.close()
        raise

    # Uploads are decoded one at a time, on one thread, and shrunk to what the model needs
    # before they leave it. One thread, not a semaphore over the request threads: glibc
    # gives each thread its own malloc arena, and every arena keeps its peak (6 concurrent
    # 7700x7700 PNGs measured 1.3 GB RSS that way, 0.53 GB with one decoding thread).
    decode_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lookalike-upload")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        decode_pool.shutdown(wait=True)
        service.close()

    app = FastAPI(
        title="lookalike",
        version=__version__,
        description="Reverse image search over your own images. Scores are cosine "
        "similarities (higher is more similar). Images are addressed by collection id.",
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,
    )
    app.state.service = service
    _add_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=limits.max_bytes + FORM_OVERHEAD)
    if allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed=allowed_hosts)
    app.add_middleware(OriginCheck)
    app.add_middleware(SecurityHeaders)

    def record_or_404(image_id: int) -> ImageRecord:
        record = service.find(image_id)
        if record is None:
            raise HTTPException(404, f"no image with id {image_id} in this collection")
        return record

    # ----- search ------------------------------------------------------------------
    @app.post(
        "/api/search",
        response_model=list[QueryResultOut],
        response_model_exclude_none=True,
        responses=_ERRORS,
        tags=["search"],
    )
    def search_upload(
        file: Annotated[UploadFile, File(description="the query image (JPEG, PNG, WebP...)")],
        k: Annotated[int, Form(ge=1, le=MAX_K)] = 10,
        metric: Annotated[Metric, Form()] = "cosine",
        rerank: Annotated[str, Form(max_length=100, description=RERANK_HELP)] = "none",
        under: Annotated[str | None, Form(max_length=MAX_UNDER, description=UNDER_HELP)] = None,
    ) -> Any:
        """The k indexed images most like an uploaded image (multipart field `file`)."""
        setup = _rerank_or_422(rerank)
        name = _display_name(file.filename)
        data = read_limited(file.file, limits, name)  # bytes: bounded by BodyLimit
        image = decode_pool.submit(
            decode_upload, data, limits, min_side=service.draft_size, name=name
        ).result()
        del data
        return [service.search_image(image, name, k, metric, setup, under).to_json(with_id=True)]

    @app.get(
        "/api/search",
        response_model=list[QueryResultOut],
        response_model_exclude_none=True,
        responses=_ERRORS,
        tags=["search"],
    )
    def search_by_id(
        id: Annotated[
            int, Query(ge=-INT64_MAX - 1, le=INT64_MAX, description="an indexed image's id")
        ],
        k: K = 10,
        metric: Metric = "cosine",
        rerank: Annotated[str, Query(max_length=100, description=RERANK_HELP)] = "none",
        under: Annotated[str | None, Query(max_length=MAX_UNDER, description=UNDER_HELP)] = None,
    ) -> Any:
        """More like this: the k images most like an indexed one (itself left out)."""
        result = service.search_id(id, k, metric, _rerank_or_422(rerank), under)
        if result is None:
            raise HTTPException(404, f"no image with id {id} in this collection")
        return [result.to_json(with_id=True)]

    # ----- images ------------------------------------------------------------------
    @app.get("/api/images", response_model=ImagePageOut, tags=["images"])
    def list_images(
        offset: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 48,
    ) -> Any:
        """Indexed images in id order, a page at a time."""
        total, records = service.page(offset, limit)
        images = [
            {"id": r.id, "path": r.path, "width": r.width, "height": r.height, "size": r.size}
            for r in records
        ]
        return {"total": total, "offset": offset, "limit": limit, "images": images}

    @app.get(
        "/api/images/{image_id}",
        responses={200: {"content": {"image/*": {}}}, **_ERRORS},
        response_class=FileResponse,
        tags=["images"],
    )
    def get_image(image_id: ImageId) -> FileResponse:
        """The image file itself (formats browsers can't show come as a JPEG preview)."""
        record = record_or_404(image_id)
        try:
            media_type = browser_media_type(record.path)
            if media_type is None:
                return _jpeg(thumbs.get(record, PREVIEW_SIZE))
        except ImageReadError as exc:
            raise HTTPException(404, f"image {image_id}: {exc}") from None
        return FileResponse(record.path, media_type=media_type)

    @app.get(
        "/api/images/{image_id}/thumbnail",
        responses={200: {"content": {"image/jpeg": {}}}, **_ERRORS},
        response_class=FileResponse,
        tags=["images"],
    )
    def get_thumbnail(
        image_id: ImageId,
        size: Annotated[
            int,
            Query(
                description=f"one of {THUMB_SIZES}", json_schema_extra={"enum": list(THUMB_SIZES)}
            ),
        ] = 256,
    ) -> FileResponse:
        """A JPEG thumbnail, longest side at most `size` (cached on disk)."""
        if size not in THUMB_SIZES:
            raise HTTPException(422, f"size must be one of {', '.join(map(str, THUMB_SIZES))}")
        record = record_or_404(image_id)
        try:
            return _jpeg(thumbs.get(record, size))
        except ImageReadError as exc:
            raise HTTPException(404, f"image {image_id}: {exc}") from None

    # ----- collection --------------------------------------------------------------
    @app.get(
        "/api/duplicates",
        response_model=list[DuplicateGroupOut],
        responses=_ERRORS,
        tags=["collection"],
    )
    def duplicates(
        threshold: Annotated[float, Query(ge=-1.0, le=1.0)] = 0.95,
        verify: bool = True,
    ) -> Any:
        """Groups of near-duplicate images, largest first: every member has similarity >=
        threshold to the group's representative (members[0]) or, with `verify` (needs
        OpenCV), was matched to it by local features (`verified`); `keep` is a suggestion
        (most pixels, then largest file, then oldest). Nothing is deleted."""
        return [g.to_json(with_id=True) for g in service.duplicates(threshold, verify)]

    @app.get("/api/info", tags=["collection"])
    def info() -> dict[str, Any]:
        """What the collection holds: model, count, size on disk, skipped files, index."""
        return service.info()

    # ----- the page ----------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(
            STATIC / "index.html",
            media_type="text/html",
            headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"},
        )

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _jpeg(path: Path) -> FileResponse:
    # Ids change when content changes, so a thumbnail under an id may be cached a while.
    return FileResponse(
        path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"}
    )


def _display_name(filename: str | None) -> str:
    """The uploaded file's base name, as a label only (never used as a path)."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name[:200] or "upload"


_UPLOAD_STATUS: dict[type[UploadError], int] = {
    UploadTooLargeError: 413,
    UnsupportedImageError: 415,
}


def _add_error_handlers(app: FastAPI) -> None:
    """Every error is JSON: {"error": "one line for a person"} (+ "detail" for 422)."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
            for e in exc.errors()
        ]
        message = "; ".join(_describe(d["loc"], d["msg"]) for d in details) or "bad request"
        return JSONResponse({"error": message, "detail": details}, 422)

    @app.exception_handler(UploadError)
    async def upload_error(_request: Request, exc: UploadError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, _UPLOAD_STATUS.get(type(exc), 400))

    @app.exception_handler(LookalikeError)
    async def library_error(_request: Request, exc: LookalikeError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, 400)


_WHERE = {"query": "query parameter", "body": "form field", "path": "path parameter"}


def _describe(loc: list[Any], msg: str) -> str:
    """('query', 'k') + 'Input should be ...' -> "query parameter 'k': Input should be ..."."""
    if len(loc) >= 2 and loc[0] in _WHERE:
        return f"{_WHERE[loc[0]]} {'.'.join(map(str, loc[1:]))!r}: {msg}"
    return f"{'.'.join(map(str, loc))}: {msg}" if loc else msg


def _rerank_or_422(text: str) -> Rerank | None:
    try:
        return parse_rerank(text)
    except RerankError as exc:
        raise HTTPException(422, str(exc)) from None
