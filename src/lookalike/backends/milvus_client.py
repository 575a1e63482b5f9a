"""Connections to Milvus for the Milvus backend: one client per location per process,
shared by refcount, with pymilvus' and Milvus Lite's own log output kept off stderr (the
backend reports errors itself, one line each), and every call's errors turned into
CollectionErrors naming the location."""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lookalike.errors import CollectionError

if TYPE_CHECKING:
    from lookalike.backends.locations import MilvusLocation

CONNECT_TIMEOUT_S = 10.0
# Answers that the same request a moment later does not get (lower case):
# - a bare "internal error" (seen on create_index, and on a request of the moves test);
# - a search that reaches the server's query node before the collection's index metadata
#   (seen once, CI of 2026-12-03: `search` in a new process right after `index`, Milvus
#   Lite server): Assert "col_index_meta != nullptr" in segcore/plan_c.cpp.
TRANSIENT_ERRORS = ("internal error", "col_index_meta != nullptr")
RETRY_PAUSES_S = (0.2, 0.5, 1.0, 2.0)
LITE_RESTART_PAUSES_S = (0.5, 1.0, 2.0, 4.0)

_CLIENTS: dict[str, Any] = {}
_USERS: dict[str, int] = {}  # backends open on each client (the web server opens two)


def connect(location: MilvusLocation) -> Any:
    """One client per location per process (starting Milvus Lite takes a moment)."""
    key = location.uri
    if key in _CLIENTS:
        return _CLIENTS[key]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # milvus-lite imports pkg_resources
            from pymilvus import MilvusClient
    except ImportError:
        raise CollectionError(
            f"--db {location}: the Milvus backend needs pymilvus and Milvus Lite: "
            "pip install 'lookalike[milvus]'"
        ) from None
    # pymilvus logs every failed call at ERROR on stderr; lookalike reports errors itself.
    for name in ("pymilvus", "pymilvus.milvus_client"):  # the second has a level of its own
        logging.getLogger(name).setLevel(logging.CRITICAL)
    os.environ.setdefault("LOG_LEVEL", "FATAL")  # the Milvus Lite process' own log
    if location.lite_file is not None:
        _quiet_lite()
        if not location.lite_file.parent.is_dir():
            raise CollectionError(f"--db {location}: folder {location.lite_file.parent} not found")
        name = location.lite_file.name
        if len(name) > 36 or not all(c.isalnum() or c in "._-" for c in name):
            raise CollectionError(
                f"--db {location}: Milvus Lite needs a file name of at most 36 letters, "
                "digits, '.', '_' or '-'"
            )
    lite = location.lite_file
    if lite is not None and _lite_file_in_use(lite):
        raise CollectionError(
            f"--db {location}: cannot open Milvus (the file is open in another process); "
            "is another process using this file?"
        )
    # After a kill -9, the killed process' Milvus Lite server outlives it for a moment and a
    # new one cannot start on the file yet (seen in CI): a few pauses while nobody holds it.
    pauses = LITE_RESTART_PAUSES_S if lite is not None else ()
    for pause in (*pauses, None):
        try:
            with warnings.catch_warnings(), _no_logging():
                warnings.simplefilter("ignore")
                client = MilvusClient(uri=location.uri, timeout=CONNECT_TIMEOUT_S)
            break
        except Exception as exc:  # pymilvus raises several kinds; all mean "can't connect"
            if pause is not None and lite is not None and not _lite_file_in_use(lite):
                time.sleep(pause)
                continue
            why = "is another process using this file?" if lite else "is the server running?"
            raise CollectionError(
                f"--db {location}: cannot open Milvus ({first_line(exc)}); {why}"
            ) from None
    _CLIENTS[key] = client
    return client


def _lite_file_in_use(lite_file: Path) -> bool:
    """Does another process hold Milvus Lite's lock on this file (milvus_lite.server's
    ``.NAME.lock``, an fcntl lock held while its server runs)? Checked before opening:
    a failed open by milvus_lite deletes that lock file, whoever holds it."""
    import fcntl

    from milvus_lite.server_manager import server_manager_instance

    lock = lite_file.parent / f".{lite_file.name}.lock"
    # Our own server's lock: probing it would drop it (closing any descriptor of a file
    # releases this process' fcntl locks on it), so never probe a file this process serves.
    if str(lite_file.absolute().resolve()) in getattr(server_manager_instance, "_servers", {}):
        return False
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:  # no lock file: nobody serves it
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


@contextlib.contextmanager
def _no_logging() -> Iterator[None]:
    """milvus-lite logs a failed start on the root logger; our error says it in one line."""
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _quiet_lite() -> None:
    """The embedded Milvus process writes log lines to our stderr even when all is well
    ("Process exit"); its output goes nowhere unless LOOKALIKE_MILVUS_LOG is set."""
    if os.environ.get("LOOKALIKE_MILVUS_LOG"):
        return
    import functools
    import subprocess
    import types

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import milvus_lite.server as lite_server

    quiet = functools.partial(
        subprocess.Popen, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    # Only milvus_lite.server's view of the subprocess module is replaced.
    lite_server.subprocess = types.SimpleNamespace(
        Popen=quiet, TimeoutExpired=subprocess.TimeoutExpired
    )


def first_line(exc: BaseException) -> str:
    # MilvusException's str() is its repr; its message field is the sentence.
    message = getattr(exc, "message", None)
    text = str(message if isinstance(message, str) and message else exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def retain(location: MilvusLocation) -> None:
    """One more backend uses the location's client (release() once per retain())."""
    _USERS[location.uri] = _USERS.get(location.uri, 0) + 1


def release(location: MilvusLocation) -> None:
    users = _USERS.get(location.uri, 0) - 1
    if users > 0:
        _USERS[location.uri] = users
        return
    _USERS.pop(location.uri, None)
    client = _CLIENTS.pop(location.uri, None)
    if client is None:
        return
    with contextlib.suppress(Exception):
        client.close()
    if location.lite_file is not None:
        # Stops the embedded Milvus, so another process may open the file.
        with contextlib.suppress(Exception):
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(str(location.lite_file))


def call(location: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """A pymilvus request that is safe to repeat, retried on a transient error; its errors
    become one-line CollectionErrors naming the location."""
    return _as_collection_error(location, lambda: retrying(fn, *args, **kwargs))


def call_once(location: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """As ``call``, never repeated: for inserts (Milvus keeps both rows of a repeated key)."""
    return _as_collection_error(location, lambda: fn(*args, **kwargs))


def retrying(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(...)``, again after a pause while Milvus answers with a transient error.

    Milvus Lite's server now and then answers a request with an error that the same
    request a moment later does not get (``TRANSIENT_ERRORS``). A few short retries ride
    that out; any other error, or the same one after the last pause, goes to the caller."""
    for pause in (*RETRY_PAUSES_S, None):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if pause is None or not _transient(exc):
                raise
            time.sleep(pause)
    raise AssertionError("unreachable")


def _transient(exc: Exception) -> bool:
    from pymilvus.exceptions import MilvusException

    text = str(exc).lower()
    return isinstance(exc, MilvusException) and any(t in text for t in TRANSIENT_ERRORS)


def _as_collection_error(location: Any, thunk: Any) -> Any:
    try:
        return thunk()
    except CollectionError:
        raise
    except Exception as exc:
        from pymilvus.exceptions import MilvusException

        if isinstance(exc, MilvusException | ConnectionError | TimeoutError) or (
            type(exc).__module__.startswith(("grpc", "pymilvus"))
        ):
            raise CollectionError(f"{location}: Milvus said: {first_line(exc)}") from None
        raise
