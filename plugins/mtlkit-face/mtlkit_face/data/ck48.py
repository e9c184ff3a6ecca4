"""CK+48: ``<root>/<expression>/S<subject>_<sequence>_<frame>.png``, labels read from the paths."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar

from mtlkit.errors import DataError
from mtlkit_face.data.base import FaceDataModule, FaceDataOptions
from mtlkit_face.data.records import FaceRecord, natural_key

ENV_VAR = "MTLKIT_CK48"
_NAME = re.compile(r"^(S\d+)_(\d+)_(\d+)\.(?:png|jpe?g|bmp|tiff?)$", re.IGNORECASE)


def parse_name(name: str) -> tuple[str, str, int]:
    """``"S010_004_00000017.png"`` -> ``("S010", "S010_004", 17)``; DataError naming the file."""
    m = _NAME.match(name)
    if m is None:
        raise DataError(f"{name!r} does not match S<subject>_<sequence>_<frame>.<png|jpg|bmp|tif>")
    subject, seq, frame = m.groups()
    return subject, f"{subject}_{seq}", int(frame)


def parse_path(path: str | Path) -> FaceRecord:
    """A record from ``.../<expression>/<file>``: the folder name is the expression."""
    p = Path(path)
    try:
        subject, sequence, frame = parse_name(p.name)
    except DataError as e:
        raise DataError(f"{p}: file name {e}") from None
    return FaceRecord(subject, sequence, p.parent.name, path=str(p), frame=frame)


def check_sequences(records: list[FaceRecord]) -> None:
    """A CK+ sequence has one emotion label: frames of it in two expression folders conflict."""
    first: dict[str, FaceRecord] = {}
    for r in records:
        seen = first.setdefault(r.sequence, r)
        if seen.expression != r.expression:
            raise DataError(
                f"ck48: sequence {r.sequence!r} is labelled both {seen.expression!r} ({seen.path})"
                f" and {r.expression!r} ({r.path}); a sequence has one expression"
            )


class CK48Options(FaceDataOptions):
    resume_harmless: ClassVar[frozenset[str]] = FaceDataOptions.resume_harmless | {"root"}
    """A moved CK+48 folder holds the same images (the checkpoint's split check still runs)."""

    root: str | None = None
    """The CK+48 folder; None: the MTLKIT_CK48 environment variable."""
    expressions: list[str] | None = None
    """Expression folders to read, in label order; None: every folder, sorted; others ignored."""


class CK48Data(FaceDataModule):
    """CK+48 crops; hidden files are ignored, any other unparseable name is a bad image."""

    Options = CK48Options
    options: CK48Options
    dataset_name = "ck48"

    def resolve_root(self) -> Path:
        """The dataset folder from the option or the environment, checked to exist."""
        root = self.options.root or os.environ.get(ENV_VAR)
        if not root:
            raise DataError(f"ck48: set the dataset option 'root' or the {ENV_VAR} environment var")
        path = Path(root).expanduser()
        if not path.is_dir():
            raise DataError(f"ck48: dataset folder {str(path)!r} does not exist or is not a folder")
        return path

    def load_records(self) -> tuple[list[FaceRecord], list[str]]:
        root = self.resolve_root()
        folders = sorted((d.name for d in root.iterdir() if d.is_dir()), key=natural_key)
        folders = [f for f in folders if not f.startswith(".")]
        wanted = self.options.expressions or folders
        missing = [e for e in wanted if e not in folders]
        if missing:
            raise DataError(f"ck48: expression folder(s) {missing} are missing under {str(root)!r}")
        self._ignored = [f for f in folders if f not in wanted]
        records: list[FaceRecord] = []
        skipped: list[str] = []
        for expression in wanted:
            for entry in sorted(os.scandir(root / expression), key=lambda e: natural_key(e.name)):
                if entry.name.startswith(".") or (entry.is_dir() and not _NAME.match(entry.name)):
                    continue  # hidden files and sub-folders; a folder or dangling link named
                    # like an image is kept, so decoding reports it (under on_bad_image)
                try:
                    records.append(parse_path(entry.path))
                except DataError as e:
                    if self.options.on_bad_image == "error":
                        raise
                    skipped.append(str(e))
        check_sequences(records)
        self._root = root
        return records, skipped

    def extra_summary(self) -> dict[str, Any]:
        return {"root": str(self._root), "ignored_folders": self._ignored}
