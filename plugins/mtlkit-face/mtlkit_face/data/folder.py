"""A generic image-folder layout: one folder per person (CASIA-WebFace, VGGFace2, MS1M style) or
one folder per expression (RAF-DB, AffectNet style), labels read from the folder names.

- ``folders: subject``: ``<root>/<subject>/[<sequence>/]<image>``. A sub-folder under a person
  (a video, a session) is a sequence; an image directly in the person's folder is a sequence of
  its own. There is no expression label (no ``expression`` target).
- ``folders: expression``: ``<root>/<expression>/<image>``. Nobody is named, so each image is
  its own subject: protocols can keep images apart but not people, and a person with several
  images may fall on both sides of a split. Write a manifest when the subjects are known.

Hidden files and folders are ignored; files are found recursively by image suffix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal

from mtlkit.errors import DataError
from mtlkit_face.data.base import FaceDataModule, FaceDataOptions
from mtlkit_face.data.manifest_csv import NO_EXPRESSION
from mtlkit_face.data.records import FaceRecord, natural_key
from mtlkit_face.inputs import IMAGE_SUFFIXES


class ImageFolderOptions(FaceDataOptions):
    resume_harmless: ClassVar[frozenset[str]] = FaceDataOptions.resume_harmless | {"root"}
    """A moved folder holds the same images (the checkpoint's split check still runs)."""

    root: str
    """The folder holding one sub-folder per class."""
    folders: Literal["subject", "expression"]
    """What the top-level folder names are: people, or expression classes."""


def _images(folder: Path) -> list[str]:
    """Image files under ``folder`` (recursive, hidden entries skipped), in natural order."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [
            os.path.join(dirpath, f)
            for f in filenames
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES
        ]
    return sorted(found, key=lambda p: natural_key(os.path.relpath(p, folder)))


class ImageFolderData(FaceDataModule):
    """Faces in class folders; streams like any face dataset (``storage``)."""

    Options = ImageFolderOptions
    options: ImageFolderOptions
    dataset_name = "image_folder"

    def load_records(self) -> tuple[list[FaceRecord], list[str]]:
        root = Path(self.options.root).expanduser()
        if not root.is_dir():
            raise DataError(f"image_folder: {str(root)!r} does not exist or is not a folder")
        classes = sorted(
            (d.name for d in os.scandir(root) if d.is_dir() and not d.name.startswith(".")),
            key=natural_key,
        )
        if not classes:
            raise DataError(f"image_folder: {str(root)!r} has no class folders")
        by_subject = self.options.folders == "subject"
        self.has_expressions = not by_subject
        records: list[FaceRecord] = []
        for name in classes:
            for path in _images(root / name):
                rel = os.path.relpath(path, root)
                parent = os.path.dirname(os.path.relpath(path, root / name))
                if by_subject:
                    sequence = f"{name}/{parent}" if parent else f"{name}/ {rel}"
                    records.append(FaceRecord(name, sequence, NO_EXPRESSION, path=path))
                else:
                    records.append(FaceRecord(rel, rel, name, path=path))
        if not records:
            raise DataError(f"image_folder: no images under {str(root)!r}")
        self._root = root
        return records, []

    def extra_summary(self) -> dict[str, Any]:
        return {"root": str(self._root), "folders": self.options.folders}

    def group_source(self) -> str:
        """The root folder: person folders are named by whoever assembled it."""
        return f"{self.dataset_name}:{self._root.resolve()}"
