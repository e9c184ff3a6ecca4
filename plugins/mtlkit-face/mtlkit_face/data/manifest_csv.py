"""Reading a CSV manifest ``path,subject,expression[,sequence]`` (any face dataset without a
fixed layout).

Relative paths resolve against the manifest's folder and may not leave it (checked on the path's
text, so symlinks inside the folder are allowed). Without a ``sequence`` column, each
(subject, expression) pair is one sequence, the safe choice for video-frame datasets. Sequence
ids are namespaced by subject, so "001" of two people are two sequences. An empty cell in an
optional column means "unknown": an image with an empty ``sequence`` cell is a sequence of its own
(a singleton), so ``sequence-holdout`` may hold it out alone. An empty required cell is an error.
Labels are case-sensitive, so two spellings of one label that differ only in case or spacing
("Happy"/"happy", "s01"/"S01") are refused: they would silently become two classes or two people.
The delimiter (``,``, ``;`` or tab) is detected; unknown columns are ignored with a warning.

Binary attribute columns ``attr_<name>`` (CelebA-style) become targets ``attr_<name>``: a cell is
``1`` (yes), ``0`` or ``-1`` (no; CelebA writes -1) or empty (unknown: MISSING_LABEL). A manifest
with attribute columns may leave out the ``expression`` column (it then has no expression target).

The parsing only; the data module over it is :mod:`mtlkit_face.data.manifest`, and the predict
input listing (:mod:`mtlkit_face.inputs`) reads manifests through here without importing the
dataset classes.
"""

from __future__ import annotations

import csv
import difflib
import os
import unicodedata
import warnings
from pathlib import Path

from mtlkit.errors import DataError
from mtlkit.task import MISSING_LABEL
from mtlkit_face.data.records import ATTRIBUTE_PREFIX, FaceRecord

REQUIRED = ("path", "subject", "expression")
OPTIONAL = ("sequence",)
"""Columns whose empty cells mean "unknown" (see ``sequence_id``)."""
ATTRIBUTE_VALUES = {"1": 1, "0": 0, "-1": 0, "": MISSING_LABEL}
"""Attribute cells: 1 yes; 0 or CelebA's -1 no; empty unknown."""
NO_EXPRESSION = "none"
"""The expression of every row of a manifest without an expression column."""
DELIMITERS = ",;\t"
SNIFF_LINES = 50



def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


def _fold(label: str) -> str:
    """The form two spellings of one label share: NFKC, case-folded, single spaces."""
    return " ".join(unicodedata.normalize("NFKC", label).casefold().split())


def sniff_delimiter(manifest: Path) -> str | None:
    """The delimiter of the first lines: ``,``, ``;`` or tab; None if ``csv.Sniffer`` can't tell."""
    with open(manifest, newline="", encoding="utf-8-sig") as f:
        sample = "".join(f.readline() for _ in range(SNIFF_LINES))
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        return None


def _delimiter_hint(cells: list[str], used: str) -> str:
    """A hint when the header line holds another delimiter than the one it was split on."""
    for d, name in ((";", "semicolon"), ("\t", "tab")):
        if d != used and any(d in c for c in cells):
            return f"; the file seems to be {name}-separated (the header line contains {d!r})"
    return ""


def _did_you_mean(names: list[str], choices: list[str]) -> str:
    """Say "('sequnce': did you mean 'sequence'?)" for each name close to one of ``choices``."""
    hints = [
        f"{n!r}: did you mean {m[0]!r}?"
        for n in names
        if (m := difflib.get_close_matches(n, choices, n=1))
    ]
    return f" ({'; '.join(hints)})" if hints else ""


def read_header(manifest: Path, cells: list[str], delimiter: str) -> dict[str, int]:
    """Position of each known column; a missing or repeated column is an error, others a warning."""
    header = [c.strip() for c in cells]
    attrs = [h for h in header if h.startswith(ATTRIBUTE_PREFIX) and len(h) > len(ATTRIBUTE_PREFIX)]
    required = [c for c in REQUIRED if c != "expression" or not attrs]
    known = (*REQUIRED, *OPTIONAL, *attrs)
    unknown = [h for h in header if h not in known]
    missing = [c for c in required if c not in header]
    if missing:
        guesses = [g for g in unknown if difflib.get_close_matches(g, missing, n=1)]
        raise DataError(
            f"{manifest} line 1: missing column(s) {missing} (header: {header}); expected"
            f" {', '.join(REQUIRED)}[, {', '.join(OPTIONAL)}][, attr_<name>...]"
            f"{_did_you_mean(guesses, missing)}{_delimiter_hint(cells, delimiter)}"
        )
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise DataError(f"{manifest} line 1: repeated column(s) {dup}")
    if unknown:
        absent = [c for c in OPTIONAL if c not in header]
        warnings.warn(
            f"{manifest} line 1: ignoring unknown column(s) {unknown}"
            f"{_did_you_mean(unknown, absent)}; known columns: {', '.join(known)}",
            stacklevel=3,
        )
    return {name: header.index(name) for name in known if name in header}


def sequence_id(subject: str, sequence: str | None, expression: str, line: int) -> str:
    """A globally unique sequence id: namespaced by subject; a singleton when the cell is empty.

    No ``sequence`` column (None): one sequence per (subject, expression). An empty cell: the
    image is its own sequence, named by its line (a stripped cell never starts with a space).
    """
    if sequence is None:
        return f"{subject}/{expression}"
    return f"{subject}/{sequence}" if sequence else f"{subject}/ (line {line})"


def read_manifest(manifest: Path, expressions: list[str] | None = None) -> list[FaceRecord]:
    """Parse and check the manifest; each error names the file, the line and the reason."""
    return read_manifest_table(manifest, expressions)[0]


def read_manifest_table(
    manifest: Path, expressions: list[str] | None = None
) -> tuple[list[FaceRecord], list[str], bool]:
    """The records, the attribute names (``attr_<name>`` columns, in header order; each record's
    ``attributes`` follow it) and whether the manifest has an expression column."""
    if not manifest.is_file():
        raise DataError(f"manifest {str(manifest)!r} does not exist or is not a file")
    folder = os.path.normpath(os.path.abspath(manifest.parent))
    allowed = set(expressions) if expressions is not None else None
    records: list[FaceRecord] = []
    attrs: list[str] = []
    has_expression = True
    first_line: dict[str, int] = {}
    spelling: dict[tuple[str, str], tuple[str, int]] = {}
    try:
        delimiter = sniff_delimiter(manifest) or ","
        with open(manifest, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter)
            first = next(reader, [])
            col = read_header(manifest, first, delimiter)
            attrs = [c for c in col if c.startswith(ATTRIBUTE_PREFIX)]
            has_expression = "expression" in col
            for row in reader:
                line = reader.line_num
                where = f"{manifest} line {line}"
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(first):
                    raise DataError(f"{where}: {len(row)} fields, the header has {len(first)}")
                cells = {name: row[i].strip() for name, i in col.items()}
                cells.setdefault("expression", NO_EXPRESSION)
                empty = [name for name in REQUIRED if not cells[name]]
                bad = {a: cells[a] for a in attrs if cells[a] not in ATTRIBUTE_VALUES}
                if bad:
                    raise DataError(
                        f"{where}: attribute cell(s) {bad} are not 1, 0, -1 or empty"
                    )
                if empty:
                    raise DataError(f"{where}: empty cell(s) in required column(s) {empty}")
                full = os.path.normpath(os.path.join(folder, cells["path"]))
                if not _inside(full, folder):
                    raise DataError(
                        f"{where}: path {cells['path']!r} leads outside the manifest's folder"
                        f" {folder!r}"
                    )
                if full in first_line:
                    raise DataError(
                        f"{where}: duplicate path {cells['path']!r} (first at line"
                        f" {first_line[full]})"
                    )
                first_line[full] = line
                expression = cells["expression"]
                if allowed is not None and expression not in allowed:
                    raise DataError(
                        f"{where}: unknown expression {expression!r}; expected one of"
                        f" {expressions}{_did_you_mean([expression], sorted(allowed))}"
                    )
                for column in ("subject", "expression")[: 1 + has_expression]:
                    value = cells[column]
                    seen, at = spelling.setdefault((column, _fold(value)), (value, line))
                    if seen != value:
                        raise DataError(
                            f"{where}: {column} {value!r} differs from {seen!r} (line {at}) only"
                            f" in case or spacing; write one label the same way on every row"
                        )
                subject = cells["subject"]
                records.append(
                    FaceRecord(
                        subject=subject,
                        sequence=sequence_id(subject, cells.get("sequence"), expression, line),
                        expression=expression,
                        path=full,
                        origin=where,
                        attributes=tuple(ATTRIBUTE_VALUES[cells[a]] for a in attrs),
                    )
                )
    except UnicodeDecodeError as e:
        raise DataError(f"{manifest}: not UTF-8 text ({e})") from None
    except OSError as e:
        raise DataError(f"{manifest}: cannot be read ({e.strerror or e})") from None
    except csv.Error as e:
        raise DataError(f"{manifest}: malformed CSV ({e})") from None
    if not records:
        raise DataError(f"{manifest}: no rows")
    return records, [a[len(ATTRIBUTE_PREFIX) :] for a in attrs], has_expression
