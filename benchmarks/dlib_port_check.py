"""How close mtlkit-dlibnet's port is to dlib itself (issue 23), on real and drawn faces.

The same 150x150 RGB chips go through dlib's ``face_recognition_model_v1.compute_face_descriptor``
and through the ``dlib_face`` backbone; the table gives the largest absolute difference of the
128-d descriptors, and the time per image of each on one thread. Needs ``pip install dlib-bin``
and CK+48 (``--ck48`` or ``MTLKIT_CK48``); without CK+48 only the drawn faces are compared.

    python benchmarks/dlib_port_check.py --ck48 /path/to/ck48
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from _common import write_results
from mtlkit_dlibnet.backbone import DlibFaceBackbone, DlibFaceOptions
from mtlkit_dlibnet.weights import locate_weights
from mtlkit_face.testing import drawn_faces
from PIL import Image


def ck48_chips(root: Path, n: int) -> np.ndarray:
    """Every 19th CK+48 image (sorted by path), resized to 150 px, as RGB."""
    files = sorted(root.glob("*/*.png"))[::19][:n]
    return np.stack([np.asarray(Image.open(f).convert("RGB").resize((150, 150), Image.BILINEAR))
                     for f in files])


def compare(chips: np.ndarray) -> dict[str, float]:
    import dlib

    torch.set_num_threads(1)
    reference = dlib.face_recognition_model_v1(str(locate_weights()))
    start = time.perf_counter()
    theirs = np.stack([np.asarray(reference.compute_face_descriptor(np.ascontiguousarray(c)))
                       for c in chips])
    dlib_s = (time.perf_counter() - start) / len(chips)
    backbone = DlibFaceBackbone(DlibFaceOptions()).eval()
    x = torch.from_numpy(chips).permute(0, 3, 1, 2).float() / 255.0
    start = time.perf_counter()
    with torch.no_grad():
        ours = backbone(x).numpy()
    ours_s = (time.perf_counter() - start) / len(chips)
    diff = np.abs(ours - theirs)
    return {"images": len(chips), "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean()),
            "descriptor_norm_mean": float(np.linalg.norm(theirs, axis=1).mean()),
            "dlib_ms_per_image": 1000 * dlib_s, "ours_ms_per_image_batched": 1000 * ours_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ck48", default=os.environ.get("MTLKIT_CK48"))
    p.add_argument("-n", type=int, default=50)
    args = p.parse_args()
    rows = {"drawn faces": compare(drawn_faces(args.n))}
    if args.ck48 and Path(args.ck48).is_dir():
        rows["CK+48 (resized to 150 px)"] = compare(ck48_chips(Path(args.ck48), args.n))
    md = ["| images | n | max abs difference | mean abs difference | dlib ms/image |"
          " port ms/image (batched) |", "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        md.append(f"| {name} | {r['images']} | {r['max_abs_diff']:.2e} | {r['mean_abs_diff']:.2e}"
                  f" | {r['dlib_ms_per_image']:.1f} | {r['ours_ms_per_image_batched']:.1f} |")
    md.append("\nOne thread each, float32; the port's time is one batch of all images. The"
              " tolerance the tests hold it to is 1e-4. Times are rough: the machine may be"
              " shared with other work (this run: beside two training processes).")
    write_results("dlib_port_check", {"rows": rows}, "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
