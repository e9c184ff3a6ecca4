"""A CSV manifest ``path,subject,expression[,sequence]``: any face dataset without a fixed layout.

Relative paths resolve against the manifest's folder and may not leave it (checked on the path's
text, so symlinks inside the folder are allowed). Without a ``sequence`` column, each
(subject, expression) pair is one sequence, the safe choice for video-frame datasets. Sequence
ids are namespaced by subject, so "001" of two people are two sequences. Labels are case-sensitive,
so two spellings of one label that differ only in case or spacing ("Happy"/"happy", "s01"/"S01")
are refused: they would silently become two classes or two people.
"""

from __future__ import annotations

import csv
import os
import unicodedata
from pathlib import Path
from typing import Any

from mtlkit.errors import DataError
from mtlkit_face.data.base import FaceDataModule, FaceDataOptions
from mtlkit_face.data.records import FaceRecord

REQUIRED = ("path", "subject", "expression")
OPTIONAL = ("sequence",)


class ManifestOptions(FaceDataOptions):
    manifest: str
    """The CSV file; relative image paths are resolved against its folder."""
    expressions: list[str] | None = None
    """Allowed expression classes in label order; an unknown expression is an error."""


def _inside(path: str, folder: str) -> bool:
    return os.path.commonpath([path, folder]) == folder


def _fold(label: str) -> str:
    """The form two spellings of one label share: NFKC, case-folded, single spaces."""
    return " ".join(unicodedata.normalize("NFKC", label).casefold().split())


def read_manifest(manifest: Path, expressions: list[str] | None = None) -> list[FaceRecord]:
    """Parse and check the manifest; each error names the file, the line and the reason."""
    if not manifest.is_file():
        raise DataError(f"manifest {str(manifest)!r} does not exist or is not a file")
    folder = os.path.normpath(os.path.abspath(manifest.parent))
    allowed = set(expressions) if expressions is not None else None
    records: list[FaceRecord] = []
    first_line: dict[str, int] = {}
    spelling: dict[tuple[str, str], tuple[str, int]] = {}
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                raise DataError(
                    f"{manifest} line 1: missing column(s) {missing} (header: {header}); "
                    f"expected {', '.join(REQUIRED)}[, sequence]"
                )
            dup = sorted({h for h in header if header.count(h) > 1})
            if dup:
                raise DataError(f"{manifest} line 1: repeated column(s) {dup}")
            col = {name: header.index(name) for name in (*REQUIRED, *OPTIONAL) if name in header}
            for row in reader:
                line = reader.line_num
                where = f"{manifest} line {line}"
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise DataError(f"{where}: {len(row)} fields, the header has {len(header)}")
                cells = {name: row[i].strip() for name, i in col.items()}
                empty = [name for name, value in cells.items() if not value]
                if empty:
                    raise DataError(f"{where}: empty cell(s) in column(s) {empty}")
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
                        f"{where}: unknown expression {expression!r}; expected one of {expressions}"
                    )
                for column in ("subject", "expression"):
                    value = cells[column]
                    first, at = spelling.setdefault((column, _fold(value)), (value, line))
                    if first != value:
                        raise DataError(
                            f"{where}: {column} {value!r} differs from {first!r} (line {at}) only"
                            f" in case or spacing; write one label the same way on every row"
                        )
                subject = cells["subject"]
                sequence = cells.get("sequence", expression)
                records.append(
                    FaceRecord(
                        subject=subject,
                        sequence=f"{subject}/{sequence}",
                        expression=expression,
                        path=full,
                        origin=where,
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
    return records


class ManifestData(FaceDataModule):
    """Faces listed in a CSV manifest; bad rows are errors, bad files follow ``on_bad_image``."""

    Options = ManifestOptions
    options: ManifestOptions
    dataset_name = "manifest"

    def load_records(self) -> tuple[list[FaceRecord], list[str]]:
        path = Path(self.options.manifest).expanduser()
        return read_manifest(path, self.options.expressions), []

    def extra_summary(self) -> dict[str, Any]:
        return {"manifest": str(Path(self.options.manifest).expanduser())}
