"""Drawn faces written to disk as PNG files plus a manifest: on-disk data for the streaming
tests and the throughput benchmark, with no download."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mtlkit_face.data.synthetic import SyntheticFacesData
from mtlkit_face.data.transforms import ImageLayout

MANIFEST = "faces.csv"


def write_synthetic_faces(
    out: str | Path, *, size: int = 48, chans: int = 1, **options: Any
) -> Path:
    """Write ``synthetic_faces`` (its options: ``num_identities``, ``frames_per_sequence``...) as
    ``<out>/img/<subject>/<subject>_<expression>_<frame>.png`` and the manifest
    ``<out>/faces.csv`` (path, subject, expression, sequence); returns the manifest.

    The pixels are the in-memory dataset's at ``image_size=size``; the manifest is written last,
    so a folder with a manifest is complete (a cache can trust it).
    """
    out = Path(out)
    data = SyntheticFacesData(SyntheticFacesData.Options(image_size=size, **options))
    records, _ = data.load_records()
    layout = ImageLayout(chans, size, size, (0.5,) * chans, (0.5,) * chans)
    rows: list[tuple[str, str, str, str]] = []
    done = 0
    for chunk in data.iter_images(records, layout):
        arrays = chunk.numpy()
        for arr in arrays:
            r = records[done]
            rel = f"img/{r.subject}/{r.subject}_{r.expression}_{r.frame}.png"
            os.makedirs(out / "img" / r.subject, exist_ok=True)
            image = arr[0] if chans == 1 else np.ascontiguousarray(arr.transpose(1, 2, 0))
            Image.fromarray(image).save(out / rel, compress_level=1)
            rows.append((rel, r.subject, r.expression, r.sequence.split("_", 1)[1]))
            done += 1
    tmp = out / (MANIFEST + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "subject", "expression", "sequence"])
        writer.writerows(rows)
    os.replace(tmp, out / MANIFEST)
    return out / MANIFEST
