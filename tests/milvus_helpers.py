"""Milvus Lite for the tests: embedded (a file) and as its own server process on a TCP
port, so the network path a Milvus cluster uses is exercised too. Both come from the
milvus-lite wheel (the `milvus` extra); nothing is downloaded."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def require_milvus() -> None:
    """Skip when the extra is missing, except where LOOKALIKE_REQUIRE_MILVUS=1 (CI)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import milvus_lite  # noqa: F401
            import pymilvus  # noqa: F401
    except ImportError:
        if os.environ.get("LOOKALIKE_REQUIRE_MILVUS"):
            raise
        pytest.skip("the Milvus backend needs pip install 'lookalike[milvus]'")


def drop_collections(address: str, names: list[str]) -> None:
    """Keep the shared test server small: each test's collections go when it ends."""
    from pymilvus import MilvusClient

    # Not closed: pymilvus shares one connection per address between clients, and
    # closing this one would close lookalike's too.
    client = MilvusClient(uri=f"http://{address}")
    for name in names:
        if client.has_collection(name):
            client.drop_collection(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def lite_server(folder: Path) -> Iterator[str]:
    """Milvus Lite listening on 127.0.0.1:PORT; yields "127.0.0.1:PORT"."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from milvus_lite.server import BIN_PATH

    port = _free_port()
    address = f"127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(Path(BIN_PATH) / "milvus"), str(folder / "server.db"), address, "ERROR"],
        env={"LD_LIBRARY_PATH": BIN_PATH, "DYLD_LIBRARY_PATH": BIN_PATH},
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"milvus-lite server exited with {proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("milvus-lite server did not start in 60 s") from None
                time.sleep(0.1)
        yield address
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
