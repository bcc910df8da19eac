"""apply_edit: a model's response in, every changed file's new text out, all or nothing.

Order of attempts for unified diffs: `git apply` on a temporary copy, `git apply --recount`, then the
fuzzy matcher (content-located hunks, whitespace-tolerant, refusing ambiguity). SEARCH/REPLACE blocks
are applied after any diff sections. Nothing under `root` is touched; `write_changes` does that.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from idealab.patching.fuzzy import HunkErrors, apply_hunks
from idealab.patching.parse import FilePatch, parse_diff
from idealab.patching.search_replace import BlockError, apply_block, parse_blocks
from idealab.patching.unified import ResolvedPatch, git_apply, git_check


@dataclass(frozen=True)
class FileChange:
    path: str  # relative to the environment root, normalised (no a/ b/ prefix, no ./)
    old_text: str | None  # None when the change creates the file
    new_text: str | None  # None when the change deletes the file


@dataclass(frozen=True)
class ApplyResult:
    ok: bool
    changes: tuple[FileChange, ...]  # empty when not ok
    error: str | None  # which file / hunk failed and why, worded to be fed back to the model
    method: str  # "git-apply" | "git-apply-recount" | "fuzzy" | "search-replace" | "fuzzy+search-replace"
    notes: tuple[str, ...] = ()


class PathError(ValueError):
    """A path in the response that names no usable file under the root."""


class StaleChangeError(RuntimeError):
    """write_changes found a file whose content is not the change's old_text (changed since apply_edit)."""


def _failed(method: str, errors: Sequence[str], notes: Sequence[str] = ()) -> ApplyResult:
    return ApplyResult(False, (), "\n".join(errors), method, tuple(notes))


def apply_edit(root: Path, response: str) -> ApplyResult:
    parsed = parse_diff(response)
    blocks, block_problems = parse_blocks(response)
    problems = [*parsed.problems, *block_problems]
    if not parsed.files and not blocks:
        problems.append(
            "no code change found: give a unified diff (`--- a/PATH`, `+++ b/PATH`, `@@ -l,n +l,n @@` hunks) "
            "or SEARCH/REPLACE blocks (a file path line, `<<<<<<< SEARCH`, `=======`, `>>>>>>> REPLACE`)"
        )
    if problems:
        return _failed("parse", problems, parsed.notes)
    files = _Files(root)
    notes = list(parsed.notes)
    errors: list[str] = []
    sections: list[ResolvedPatch] = []
    for patch in parsed.files:
        try:
            sections.append(_resolve_patch(files, patch))
        except PathError as error:
            errors.append(str(error))
    block_paths: list[str] = []
    for block in blocks:
        try:
            if block.path is None:
                raise PathError(f"SEARCH/REPLACE block {block.number}: no file path on the line before it")
            block_paths.append(files.resolve(block.path, creating=not any(block.search)))
        except PathError as error:
            errors.append(str(error))
    if errors:
        return _failed("parse", errors, notes)

    texts = dict(files.originals)
    method = ""
    if sections:
        method = _apply_sections(sections, texts, parsed.crlf_transport, notes, errors)
    for block, path in zip(blocks, block_paths, strict=True):
        try:
            texts[path], block_notes = apply_block(path, texts.get(path), block)
            notes.extend(block_notes)
        except BlockError as error:
            errors.append(str(error))
    if blocks:
        method = f"{method}+search-replace" if method else "search-replace"
    if errors:
        return _failed(method, errors, notes)
    changes = tuple(
        FileChange(path, files.originals.get(path), text)
        for path, text in sorted(texts.items())
        if text != files.originals.get(path)
    )
    if not changes:
        return _failed(method, ["the change leaves every file exactly as it was"], notes)
    return ApplyResult(True, changes, None, method, tuple(notes))


def _apply_sections(
    sections: Sequence[ResolvedPatch],
    texts: dict[str, str | None],
    crlf_transport: bool,
    notes: list[str],
    errors: list[str],
) -> str:
    """Apply the diff sections into `texts`; returns the method that did it (errors appended on failure)."""
    eligible, git_notes = git_check(sections, texts)
    if eligible:
        # plain `git apply` reads a hunk only as far as its header's counts and ignores the rest as
        # garbage, so a hunk with too small counts would be applied in part: only recount those
        counted = all(hunk.counts_match for section in sections for hunk in section.hunks)
        for recount in (False, True) if counted else (True,):
            result = git_apply(sections, texts, recount)
            if isinstance(result, dict):
                texts.update(result)
                notes.extend(git_notes)
                return "git-apply-recount" if recount else "git-apply"
    for section in sections:
        source_path = section.old_path or section.new_path
        assert source_path is not None
        source = texts.get(section.old_path, None) if section.old_path else ""
        if source is None:
            errors.append(f"{section.old_path}: the diff changes a file that does not exist (or was deleted)")
            continue
        label = section.new_path or source_path
        try:
            patched = apply_hunks(label, source, section.hunks, crlf_transport)
        except HunkErrors as failure:
            errors.extend(failure.messages)
            continue
        notes.extend(patched.notes)
        if section.new_path is None:
            if patched.text.strip():
                errors.append(f"{section.old_path}: the diff deletes the file but its hunks leave lines in it")
                continue
            texts[source_path] = None
            continue
        texts[section.new_path] = patched.text
    return "fuzzy"


def _resolve_patch(files: _Files, patch: FilePatch) -> ResolvedPatch:
    if patch.old_path is None and patch.new_path is None:
        raise PathError("a file section has /dev/null on both sides")
    if patch.old_path is None:
        assert patch.new_path is not None
        new = files.resolve(patch.new_path, creating=True)
        if files.originals.get(new) is not None:
            raise PathError(f"{new}: the diff creates this file (`--- /dev/null`) but it already exists")
        return ResolvedPatch(None, new, patch.hunks)
    if patch.new_path is None:
        return ResolvedPatch(files.resolve(patch.old_path, creating=False), None, patch.hunks)
    # Renames are not part of the format we accept: two different names mean the model misnamed one side
    found = []
    for written in (patch.old_path, patch.new_path):
        try:
            found.append(files.resolve(written, creating=False))
        except PathError:
            continue
    if not found:
        raise PathError(f"{patch.new_path}: no such file in the environment")
    if len(set(found)) > 1:
        raise PathError(
            f"`--- {patch.old_path}` and `+++ {patch.new_path}` name two different files; renames are not "
            "supported, give both lines the same path"
        )
    return ResolvedPatch(found[0], found[0], patch.hunks)


def _strip_prefix(path: str) -> str:
    return path[2:] if path.startswith(("a/", "b/")) else path


class _Files:
    """Resolves the response's paths under root and remembers each file's original text."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.originals: dict[str, str | None] = {}

    def resolve(self, raw: str, creating: bool) -> str:
        written = raw.strip().replace("\\", "/")
        tries = [written] + ([written.split()[0]] if written and " " in written else [])
        for attempt in tries:
            found = self._existing(attempt)
            if found is not None:
                return self._load(found)
        if creating:
            path = self._clean(_strip_prefix(tries[0]))
            if path is None:
                raise PathError(f"{raw}: not a path inside the environment")
            return self._load(path)
        raise PathError(f"{_strip_prefix(written)}: no such file in the environment")

    def _existing(self, written: str) -> str | None:
        candidates = [_strip_prefix(written), written] if written.startswith(("a/", "b/")) else [written]
        for candidate in candidates:
            path = self._clean(candidate)
            if path is not None and self._is_file(path):
                return path
        # a path given from some directory above the root: drop leading components until a file matches
        parts = (self._clean(candidates[0]) or "").split("/")
        for k in range(1, len(parts)):
            tail = "/".join(parts[k:])
            if self._is_file(tail):
                return tail
        return None

    def _clean(self, path: str) -> str | None:
        path = path.strip().lstrip("/")
        while path.startswith("./"):
            path = path[2:]
        if not path:
            return None
        normal = posixpath.normpath(path)
        if normal == "." or normal.startswith("../") or normal == "..":
            return None
        target = (self.root / normal).resolve()
        if not target.is_relative_to(self.root):
            return None
        return normal

    def _is_file(self, path: str) -> bool:
        return (self.root / path).is_file()

    def _load(self, path: str) -> str:
        if path not in self.originals:
            target = self.root / path
            if target.is_file():
                try:
                    self.originals[path] = target.read_bytes().decode("utf-8")
                except UnicodeDecodeError as error:
                    raise PathError(f"{path}: not UTF-8 text ({error.reason})") from error
            else:
                self.originals[path] = None
        return path


def write_changes(root: Path, changes: Sequence[FileChange]) -> None:
    """Write changes under root after checking every file still holds its old_text (all or nothing)."""
    base = root.resolve()
    targets: list[tuple[Path, FileChange]] = []
    for change in changes:
        target = (base / change.path).resolve()
        if not target.is_relative_to(base):
            raise ValueError(f"{change.path}: outside {root}")
        current = target.read_bytes().decode("utf-8") if target.is_file() else None
        if current != change.old_text:
            raise StaleChangeError(f"{change.path}: its content is not what the change was computed against")
        targets.append((target, change))
    for target, change in targets:
        if change.new_text is None:
            target.unlink()
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(change.new_text.encode("utf-8"))
