"""The ``manifest`` dataset: faces listed in a CSV manifest ``path,subject,expression[,sequence]``
(any face dataset without a fixed layout); the format and its checks are in
:mod:`mtlkit_face.data.manifest_csv`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mtlkit_face.data.base import FaceDataModule, FaceDataOptions
from mtlkit_face.data.manifest_csv import read_manifest_table
from mtlkit_face.data.records import FaceRecord


class ManifestOptions(FaceDataOptions):
    manifest: str
    """The CSV file; relative image paths are resolved against its folder."""
    expressions: list[str] | None = None
    """Allowed expression classes in label order; any other label is an error naming its line
    (give it so a mistyped label cannot become a class of its own)."""


class ManifestData(FaceDataModule):
    """Faces listed in a CSV manifest; bad rows are errors, bad files follow ``on_bad_image``."""

    Options = ManifestOptions
    options: ManifestOptions
    dataset_name = "manifest"

    def load_records(self) -> tuple[list[FaceRecord], list[str]]:
        path = Path(self.options.manifest).expanduser()
        records, self.attribute_names, self.has_expressions = read_manifest_table(
            path, self.options.expressions
        )
        return records, []

    def extra_summary(self) -> dict[str, Any]:
        return {"manifest": str(Path(self.options.manifest).expanduser())}

    def group_source(self) -> str:
        """The manifest's folder, where its image paths resolve: another manifest over the same
        images (a subject dropped, rows re-ordered) names the same people."""
        folder = Path(self.options.manifest).expanduser().resolve().parent
        return f"{self.dataset_name}:{folder}"
