"""Milvus' transient "internal error": repeatable requests are retried, inserts never are,
and any other error is reported at once, as one line naming the location."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pymilvus")
from pymilvus.exceptions import MilvusException

from lookalike.backends import milvus_client
from lookalike.backends.locations import MilvusLocation, parse_db
from lookalike.errors import CollectionError

WHERE = "milvus://127.0.0.1:19530/photos"


class Flaky:
    """Fails ``failures`` times with ``message``, then answers "ok"."""

    def __init__(self, failures: int, message: str = "internal error") -> None:
        self.failures, self.message, self.calls = failures, message, 0

    def __call__(self, *args: Any, **kwargs: Any) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise MilvusException(code=65535, message=self.message)
        return "ok"


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(milvus_client, "RETRY_PAUSES_S", (0.0, 0.0, 0.0))


def test_a_transient_error_is_retried_until_it_passes() -> None:
    fn = Flaky(failures=2)
    assert milvus_client.call(WHERE, fn, "coll", ids=[1]) == "ok"
    assert fn.calls == 3


def test_a_search_before_the_index_metadata_is_retried() -> None:
    # Milvus Lite's server, a search right after another process indexed (CI, once).
    message = (
        'fail to search on QueryNode 1: worker(1) query failed: Assert "col_index_meta != '
        'nullptr"  at /workspace/milvus-lite/thirdparty/milvus/internal/core/src/segcore/'
        "plan_c.cpp:30"
    )
    fn = Flaky(failures=1, message=message)
    assert milvus_client.call(WHERE, fn, "coll") == "ok"
    assert fn.calls == 2


def test_a_transient_error_that_persists_becomes_one_line_naming_the_location() -> None:
    fn = Flaky(failures=10)
    with pytest.raises(CollectionError, match=f"^{WHERE}: Milvus said: .*internal error"):
        milvus_client.call(WHERE, fn)
    assert fn.calls == 4  # the first try and one per pause


def test_other_errors_are_not_retried() -> None:
    fn = Flaky(failures=1, message="collection not found[collection=photos]")
    with pytest.raises(CollectionError, match="collection not found"):
        milvus_client.call(WHERE, fn)
    assert fn.calls == 1


def test_an_insert_is_never_repeated() -> None:
    # Milvus keeps both rows when a key is inserted twice: a retried insert could duplicate.
    fn = Flaky(failures=1)
    with pytest.raises(CollectionError, match="internal error"):
        milvus_client.call_once(WHERE, fn)
    assert fn.calls == 1


class FlakyClient:
    """Stands in for pymilvus.MilvusClient: the first ``failures`` starts fail."""

    starts = 0
    failures = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        type(self).starts += 1
        if type(self).starts <= type(self).failures:
            raise MilvusException(code=2, message="Open local milvus failed")


@pytest.fixture
def flaky_client(monkeypatch: pytest.MonkeyPatch) -> type[FlakyClient]:
    import pymilvus

    monkeypatch.setattr(pymilvus, "MilvusClient", FlakyClient)
    monkeypatch.setattr(milvus_client, "LITE_RESTART_PAUSES_S", (0.0, 0.0, 0.0))
    monkeypatch.setattr(milvus_client, "_CLIENTS", {})
    FlakyClient.starts = 0
    return FlakyClient


def test_milvus_lite_retries_while_a_killed_process_server_winds_down(
    tmp_path: Path, flaky_client: type[FlakyClient]
) -> None:
    # After kill -9 nobody holds the file's lock, but the old server still runs a moment.
    flaky_client.failures = 2
    location = parse_db(f"milvus-lite://{tmp_path / 'lite.db'}")
    assert isinstance(location, MilvusLocation)
    assert isinstance(milvus_client.connect(location), FlakyClient)
    assert flaky_client.starts == 3


def test_milvus_lite_in_use_by_a_live_process_fails_at_once(
    tmp_path: Path, flaky_client: type[FlakyClient]
) -> None:
    lock = tmp_path / ".lite.db.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a');"
            "fcntl.lockf(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
            str(lock),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        location = parse_db(f"milvus-lite://{tmp_path / 'lite.db'}")
        assert isinstance(location, MilvusLocation)
        with pytest.raises(CollectionError, match="is another process using this file"):
            milvus_client.connect(location)
        assert flaky_client.starts == 0  # never started: a failed start deletes the lock
        assert lock.exists()
    finally:
        holder.kill()
        holder.wait()
