"""The `lookalike` command: JSON shapes per the contract, exit codes (0 ok, 1 failure,
2 usage), one-line errors, clean JSON on stdout. Mostly in-process with CliRunner; a few
real processes for exit codes and stdout hygiene."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from PIL import Image

from conftest import TEST_MODEL
from lookalike.models import DEFAULT_MODEL
from lookalike.models.defaults import choose_default
from lookalike.sheet import CAPTION_H, GAP, QUERY_GAP

Cli = Callable[..., Result]
CliJson = Callable[..., Any]


def _one_line_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture
def indexed(cli_json: CliJson, db: Path, photos: dict[str, Path]) -> dict[str, Path]:
    report = cli_json("index", photos["astronaut"].parent, "--db", db, "--model", TEST_MODEL)
    assert report["added"] == len(photos)
    return photos


# ----- index ------------------------------------------------------------------------------


def test_index_json(cli_json: CliJson, db: Path, photos: dict[str, Path]) -> None:
    root = photos["astronaut"].parent
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (root / "notes.txt").write_text("hi")
    report = cli_json("index", root, "--db", db, "--model", TEST_MODEL)
    for key in ("added", "updated", "moved", "removed", "unchanged", "total"):
        assert type(report[key]) is int, key
    assert report["added"] == report["total"] == len(photos)
    assert report["model"] == TEST_MODEL
    assert report["skipped"] == [
        {"path": str(root / "broken.jpg"), "reason": report["skipped"][0]["reason"]}
    ]
    assert report["skipped"][0]["reason"]
    again = cli_json("index", root, "--db", db)  # the collection's model by default
    assert again["unchanged"] == len(photos) and again["added"] == 0
    assert again["model"] == TEST_MODEL


def test_index_human_output(cli: Cli, db: Path, photos: dict[str, Path]) -> None:
    root = photos["astronaut"].parent
    (root / "empty.png").touch()
    result = cli("index", root, "--db", db, "--model", TEST_MODEL)
    assert result.exit_code == 0
    assert f"{len(photos)} added" in result.stdout
    assert f"skipped {root / 'empty.png'}: empty file" in result.stderr


def test_index_uses_lookalike_db_from_the_environment(
    cli_json: CliJson, photos: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOKALIKE_DB", str(tmp_path / "from-env"))
    cli_json("index", photos["coins"], "--model", TEST_MODEL)
    info = cli_json("info")
    assert info["db"] == str(tmp_path / "from-env") and info["count"] == 1


def test_index_into_a_collection_of_another_model(
    cli: Cli, indexed: dict[str, Path], db: Path
) -> None:
    result = cli("index", indexed["coins"], "--db", db, "--model", DEFAULT_MODEL)
    assert result.exit_code == 1
    line = _one_line_error(result.stderr)
    assert f"--model {TEST_MODEL}" in line and "--db" in line
    assert result.stdout == ""


def test_index_with_an_unknown_model(cli: Cli, db: Path, photos: dict[str, Path]) -> None:
    result = cli("index", photos["coins"], "--db", db, "--model", "no-such-model")
    assert result.exit_code == 1
    line = _one_line_error(result.stderr)
    assert "no-such-model" in line and TEST_MODEL in line  # names the known ones
    assert not db.exists()  # no empty collection left behind


def test_file_system_errors_are_one_line(cli: Cli, tmp_path: Path, photos: dict[str, Path]) -> None:
    (tmp_path / "a-file").touch()
    db = tmp_path / "a-file" / "db"
    result = cli("index", photos["coins"], "--db", db, "--model", TEST_MODEL)
    assert result.exit_code == 1
    assert str(db) in _one_line_error(result.stderr)


def test_a_second_writer_is_refused(cli: Cli, indexed: dict[str, Path], db: Path) -> None:
    from lookalike.store import Store

    holder = Store.open(db)
    holder.lock()  # as another `lookalike index` would
    try:
        result = cli("index", indexed["coins"].parent, "--db", db)
    finally:
        holder.close()
    assert result.exit_code == 1
    assert "another lookalike process" in _one_line_error(result.stderr)
    assert cli("index", indexed["coins"].parent, "--db", db).exit_code == 0


def test_pooling_is_remembered(
    cli: Cli, cli_json: CliJson, db: Path, photos: dict[str, Path], counting_model: object
) -> None:
    """Built with --pool gem, later commands without --pool use gem too; info says so."""
    cli_json(
        "index",
        photos["coins"],
        photos["china"],
        "--db",
        db,
        "--model",
        "counting-fake",
        "--pool",
        "gem",
    )
    assert cli_json("index", photos["coffee"], "--db", db)["added"] == 1
    (result,) = cli_json("search", photos["coins"], "--db", db, "-k", "5")
    assert len(result["results"]) == 2
    assert "features    gem pooling" in cli("info", "--db", db).stdout


# ----- search -----------------------------------------------------------------------------


def test_search_json(cli_json: CliJson, indexed: dict[str, Path], db: Path) -> None:
    queries = [indexed["chelsea"], indexed["coins"]]
    out = cli_json("search", *queries, "--db", db, "-k", "3")
    assert [r["query"] for r in out] == [str(q) for q in queries]
    for result, query in zip(out, queries, strict=True):
        assert [h["rank"] for h in result["results"]] == [1, 2, 3]
        for hit in result["results"]:
            assert set(hit) == {"rank", "path", "score"}
            assert Path(hit["path"]).is_absolute() and hit["path"] != str(query)
            assert isinstance(hit["score"], float) and -1 <= hit["score"] <= 1
        scores = [h["score"] for h in result["results"]]
        assert scores == sorted(scores, reverse=True)


def test_search_euclidean_adds_distance(
    cli_json: CliJson, indexed: dict[str, Path], db: Path
) -> None:
    (result,) = cli_json("search", indexed["rocket"], "--db", db, "--metric", "euclidean")
    assert len(result["results"]) == len(indexed) - 1
    for hit in result["results"]:
        assert set(hit) == {"rank", "path", "score", "distance"}
        assert hit["distance"] == pytest.approx((2 - 2 * hit["score"]) ** 0.5, abs=1e-4)


def test_search_relative_query_paths_are_reported_absolute(
    cli_json: CliJson, indexed: dict[str, Path], db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(indexed["coffee"].parent)
    (result,) = cli_json("search", "coffee.jpg", "--db", db, "-k", "2")
    assert result["query"] == str(indexed["coffee"])
    assert str(indexed["coffee"]) not in [h["path"] for h in result["results"]]


def test_search_all(cli_json: CliJson, indexed: dict[str, Path], db: Path) -> None:
    out = cli_json("search", "--all", "--db", db, "-k", "2")
    assert sorted(r["query"] for r in out) == sorted(str(p) for p in indexed.values())
    for result in out:
        assert len(result["results"]) == 2
        assert result["query"] not in [h["path"] for h in result["results"]]


@pytest.mark.parametrize("items", [[], [{"a": 1}], [{"query": "é", "results": [1, 2]}, {"b": []}]])
def test_streamed_json_arrays_read_as_the_whole_list(
    items: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from lookalike.cli.common import emit_json, emit_json_array

    emit_json_array(iter(items))
    streamed = capsys.readouterr().out
    emit_json(items)
    assert streamed == capsys.readouterr().out and json.loads(streamed) == items


def test_search_sheet(cli: Cli, indexed: dict[str, Path], db: Path, tmp_path: Path) -> None:
    sheet = tmp_path / "out" / "sheet.png"
    sheet.parent.mkdir()
    result = cli(
        "search", indexed["chelsea"], indexed["china"], "--db", db, "-k", "3", "--sheet", sheet
    )
    assert result.exit_code == 0, result.output
    thumb = 128  # the CLI's tile size
    with Image.open(sheet) as image:
        assert image.format == "PNG"
        assert image.size == (
            GAP + 4 * (thumb + GAP) + QUERY_GAP,
            GAP + 2 * (thumb + CAPTION_H + GAP),
        )
    # Human output goes on as usual, with the sheet's path on stderr.
    assert str(indexed["chelsea"]) in result.stdout and str(sheet) in result.stderr


def test_search_sheet_with_json_keeps_stdout_clean(
    cli: Cli, indexed: dict[str, Path], db: Path, tmp_path: Path
) -> None:
    sheet = tmp_path / "sheet.png"
    result = cli("search", indexed["coins"], "--db", db, "--sheet", sheet, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)[0]["query"] == str(indexed["coins"])
    assert sheet.exists()


def test_search_a_missing_query_file(cli: Cli, indexed: dict[str, Path], db: Path) -> None:
    missing = indexed["coins"].parent / "missing.jpg"
    result = cli("search", missing, "--db", db)
    assert result.exit_code == 1
    assert str(missing) in _one_line_error(result.stderr)


def test_search_a_missing_collection(cli: Cli, tmp_path: Path, photos: dict[str, Path]) -> None:
    result = cli("search", photos["coins"], "--db", tmp_path / "nothing")
    assert result.exit_code == 1
    assert "lookalike index" in _one_line_error(result.stderr)
    assert not (tmp_path / "nothing").exists()


# ----- duplicates, info, models -------------------------------------------------------------


def test_duplicates_json(cli_json: CliJson, db: Path, photos: dict[str, Path]) -> None:
    root = photos["astronaut"].parent
    copy = root / "sub" / "coffee-copy.png"
    copy.parent.mkdir()
    with Image.open(photos["coffee"]) as im:
        im.save(copy)
    cli_json("index", root, "--db", db, "--model", TEST_MODEL)
    groups = cli_json("duplicates", "--db", db, "--threshold", "0.97")
    assert len(groups) == 1
    assert {"paths", "min_score", "members", "keep", "representative"} <= set(groups[0])
    assert sorted(groups[0]["paths"]) == sorted([str(photos["coffee"]), str(copy)])
    assert 0.97 <= groups[0]["min_score"] <= 1.0 + 1e-6
    members = groups[0]["members"]
    assert members[0]["path"] == groups[0]["representative"] and members[0]["score"] == 1.0
    assert sorted(m["path"] for m in members) == sorted(groups[0]["paths"])
    assert members[1]["score"] == groups[0]["min_score"]
    # same pixels; the PNG copy is the larger file
    assert groups[0]["keep"] == str(copy)
    assert cli_json("duplicates", "--db", db, "--threshold", "1.0") == []
    pairs = cli_json("duplicates", "--db", db, "--threshold", "0.97", "--pairs")
    assert [sorted([p["a"], p["b"]]) for p in pairs] == [sorted(groups[0]["paths"])]
    assert pairs[0]["score"] == groups[0]["min_score"]


def test_duplicates_human_output(cli: Cli, indexed: dict[str, Path], db: Path) -> None:
    result = cli("duplicates", "--db", db)
    assert result.exit_code == 0 and "no near duplicates" in result.stdout


def test_info_json(cli_json: CliJson, db: Path, photos: dict[str, Path]) -> None:
    root = photos["astronaut"].parent
    (root / "empty.jpg").touch()
    cli_json("index", root, "--db", db, "--model", TEST_MODEL)
    info = cli_json("info", "--db", db)
    assert info["model"] == TEST_MODEL and info["dim"] == 768
    assert info["count"] == len(photos)
    assert type(info["bytes"]) is int and info["bytes"] >= len(photos) * 768 * 4
    assert info["skipped"] == [{"path": str(root / "empty.jpg"), "reason": "empty file (0 bytes)"}]


def test_index_kind_and_memory_budget_are_remembered(
    cli_json: CliJson, cli: Cli, db: Path, photos: dict[str, Path]
) -> None:
    root = photos["astronaut"].parent
    args = ("--db", db, "--model", TEST_MODEL, "--index", "hnsw", "--memory-budget", "1G")
    report = cli_json("index", root, *args)
    manifest = json.loads((db / "manifest.json").read_text())
    assert manifest["index"] == {"kind": "hnsw", "memory_budget": 1 << 30}
    index = cli_json("info", "--db", db)["index"]
    # Ten photos are too few to tune an approximate index on: exact, and it says why.
    assert index["requested_kind"] == "hnsw" and index["kind"] == "exact"
    assert "1000" in index["note"] and report["total"] == len(photos)
    assert "asked for hnsw" in cli("info", "--db", db).stdout
    cli_json("index", root, "--db", db, "--index", "exact")
    assert json.loads((db / "manifest.json").read_text())["index"]["kind"] == "exact"

    bad = cli("index", root, "--db", db, "--memory-budget", "lots")
    assert bad.exit_code == 2 and "'lots' is not a size" in bad.output
    assert cli("index", root, "--db", db, "--index", "annoy").exit_code == 2


def test_info_bytes_count_the_index_folders(
    cli_json: CliJson, db: Path, photos: dict[str, Path]
) -> None:
    cli_json("index", photos["astronaut"].parent, "--db", db, "--model", TEST_MODEL)
    before = cli_json("info", "--db", db)["bytes"]
    (db / "index-1").mkdir()
    (db / "index-1" / "index.faiss").write_bytes(b"x" * 5000)
    assert cli_json("info", "--db", db)["bytes"] == before + 5000


def test_info_human_output(cli: Cli, indexed: dict[str, Path], db: Path) -> None:
    result = cli("info", "--db", db)
    assert result.exit_code == 0
    assert TEST_MODEL in result.stdout and str(len(indexed)) in result.stdout


def test_models_json(cli_json: CliJson) -> None:
    models = {m["name"]: m for m in cli_json("models")}
    for name in (TEST_MODEL, DEFAULT_MODEL):
        entry = models[name]
        assert type(entry["dim"]) is int and type(entry["input_size"]) is int
        assert entry["weights_available"] is True
    assert models[DEFAULT_MODEL]["dim"] == 1280 and models[DEFAULT_MODEL]["input_size"] == 224


# ----- usage errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["search"],  # neither QUERY nor --all
        ["search", "x.jpg", "--all"],  # both
        ["search", "x.jpg", "--metric", "manhattan"],
        ["search", "x.jpg", "-k", "0"],
        ["index"],  # no PATHS
        ["duplicates", "--threshold", "2"],
        ["info", "--no-such-option"],
        ["no-such-command"],
    ],
)
def test_usage_errors_exit_2(cli: Cli, args: list[str]) -> None:
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


# ----- real processes -----------------------------------------------------------------------


def test_process_exit_codes_and_clean_json(
    run_lookalike: Callable[..., Any], db: Path, photos: dict[str, Path]
) -> None:
    root = photos["astronaut"].parent
    data = photos["chelsea"].read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])

    done = run_lookalike("index", root, "--db", db, "--model", TEST_MODEL, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # nothing but JSON on stdout
    assert [s["path"] for s in report["skipped"]] == [str(root / "truncated.jpg")]
    assert "Traceback" not in done.stderr

    mismatch = run_lookalike("index", root, "--db", db, "--model", DEFAULT_MODEL)
    assert mismatch.returncode == 1
    assert _one_line_error(mismatch.stderr).startswith("Error: ")

    usage = run_lookalike("search", "--db", db)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr

    missing = run_lookalike("info", "--db", db.parent / "no-db")
    assert missing.returncode == 1
    _one_line_error(missing.stderr)


@pytest.mark.slow
def test_process_default_model_json(
    run_lookalike: Callable[..., Any], db: Path, photos: dict[str, Path]
) -> None:
    """The real model (loading, maybe exporting) prints nothing on stdout but the JSON."""
    done = run_lookalike("index", photos["chelsea"], photos["coffee"], "--db", db, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["model"] == choose_default().model and report["added"] == 2
    found = run_lookalike("search", photos["chelsea"], "--db", db, "--json")
    assert found.returncode == 0, found.stderr
    (result,) = json.loads(found.stdout)
    assert [h["path"] for h in result["results"]] == [str(photos["coffee"])]


def test_a_reader_that_goes_away_is_no_error() -> None:
    """`lookalike models | head -0`: the pipe closes before lookalike writes; no
    "Error: Broken pipe" line, no traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lookalike", "models"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the interpreter has even started
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1
    assert stderr == "", stderr


def test_the_console_script_says_lookalikes_notes_on_a_terminal() -> None:
    import io
    import logging

    import lookalike.cli as cli_module

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    logger = logging.getLogger("lookalike")
    handlers, level = list(logger.handlers), logger.level
    terminal, pipe = Terminal(), io.StringIO()
    try:
        cli_module._say_notes(terminal)  # what main() does first
        cli_module._say_notes(pipe)
        logger.info("preparing %s for this machine, once", "a-model")
    finally:
        logger.handlers[:] = handlers
        logger.setLevel(level)
    assert terminal.getvalue() == "lookalike: preparing a-model for this machine, once\n"
    assert pipe.getvalue() == ""  # scripts' stderr: unchanged


def test_exit_skips_teardown_but_runs_exit_handlers(tmp_path: Path) -> None:
    """main() ends without Python's teardown (it costs a user ~0.07 s per command), yet
    atexit handlers run, output is complete and the exit status is the command's."""
    ran, torn_down = tmp_path / "atexit-ran", tmp_path / "torn-down"
    script = (
        "import atexit, sys\n"
        f"atexit.register(lambda: open({str(ran)!r}, 'a').write('ran'))\n"
        "class Teardown:\n"
        f"    def __del__(self): open({str(torn_down)!r}, 'w').write('yes')\n"
        "KEEP = Teardown()  # freed only by the interpreter's teardown\n"
        "from lookalike.cli import main\n"
        "sys.argv = ['lookalike'] + sys.argv[1:]\n"
        "main()\n"
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-c", script, *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    listed = run("models", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {m["name"] for m in json.loads(listed.stdout)} >= {DEFAULT_MODEL}  # all of it
    assert ran.read_text() == "ran" and not torn_down.exists()
    refused = run("search", str(tmp_path / "missing.jpg"), "--db", str(tmp_path / "db"))
    assert refused.returncode == 1 and "no collection here yet" in refused.stderr
    assert ran.read_text() == "ranran" and not torn_down.exists()


def test_search_rerank(cli_json: CliJson, cli: Cli, indexed: dict[str, Path], db: Path) -> None:
    plain = cli_json("search", indexed["chelsea"], "--db", db, "-k", "3")
    for method in ("qe", "kr:k1=3,k2=2", "verify:inliers=12"):
        out = cli_json("search", indexed["chelsea"], "--db", db, "-k", "3", "--rerank", method)
        hits = out[0]["results"]
        assert [h["rank"] for h in hits] == [1, 2, 3]
        # Each hit keeps its plain cosine score, whatever its rank.
        everyone = cli_json("search", indexed["chelsea"], "--db", db, "-k", "100")[0]["results"]
        score_of = {h["path"]: h["score"] for h in everyone}
        assert all(h["score"] == pytest.approx(score_of[h["path"]], abs=1e-6) for h in hits)
    assert len(plain[0]["results"]) == 3
    result = cli("search", indexed["chelsea"], "--db", db, "--rerank", "magic")
    assert result.exit_code == 1
    assert "unknown re-ranking 'magic'" in _one_line_error(result.stderr)
