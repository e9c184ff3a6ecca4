"""Fingerprints of short real training runs, one per registered weighter: run it in two checkouts
(before and after a refactor) and compare, to show the step is bit-for-bit unchanged.

Each run is the tiny two-task MLP of the test suite, trained through the real ``Trainer`` for two
epochs; the fingerprint is the SHA-256 of the final model and weighter tensors and of the test
metrics. Weighters with a representation variant (``rep: true``) also run with it, and one run
takes the batched backward, so every gradient path is covered.

    python benchmarks/engine_fingerprint.py --out before.json        # in the old checkout
    python benchmarks/engine_fingerprint.py --compare before.json    # in the new one
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from mtlkit.config import load_config
from mtlkit.plugins import PluginHost
from mtlkit.trainer import Trainer

REQUIRED = {"static": {"weights": {"a": 1.0, "b": 0.5}}}
"""Options a weighter cannot do without."""


def config(run_dir: Path, weighter: dict[str, Any], **trainer: Any) -> dict[str, Any]:
    """Two classification tasks on synthetic data, a one-hidden-layer MLP (as tests/conftest)."""
    return {
        "output_dir": str(run_dir),
        "seed": 3,
        "trainer": {"epochs": 2, "batch_size": 16, "progress": "off", "plot": False, **trainer},
        "optimizer": {"name": "adamw", "lr": 0.01},
        "backbone": {"name": "mlp", "in_features": 16, "hidden": [32]},
        "tasks": [{"name": "classification", "id": "a"}, {"name": "classification", "id": "b"}],
        "weighter": weighter,
        "data": {"name": "synthetic", "num_samples": 160, "num_features": 16},
    }


def variants(host: PluginHost) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Label -> (weighter config, trainer options): every weighter, its ``rep`` variant, and
    one batched-backward run."""
    out: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for name in sorted(host.weighters.names()):
        base = {"name": name, **REQUIRED.get(name, {})}
        out[name] = (base, {})
        options = host.weighters.resolve(name).Options
        if "rep" in getattr(options, "model_fields", {}):
            out[f"{name}-rep"] = ({**base, "rep": True}, {})
    out["pcgrad-batched"] = ({"name": "pcgrad"}, {"batched_backward": True})
    return out


def _feed(h: Any, key: str, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    elif isinstance(value, dict):
        for k in sorted(value, key=str):
            _feed(h, f"{key}.{k}", value[k])
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _feed(h, f"{key}.{i}", v)
    else:
        h.update(f"{key}={value!r}".encode())


def fingerprint(trainer: Trainer, metrics: dict[str, Any]) -> str:
    """SHA-256 of every model and weighter tensor and state (by name) and of the test metrics."""
    h = hashlib.sha256()
    _feed(h, "model", trainer.model.state_dict())
    _feed(h, "weighter", trainer.weighter.state_dict())
    h.update(json.dumps(metrics, sort_keys=True).encode())
    return h.hexdigest()


def run_all() -> dict[str, str]:
    torch.set_num_threads(1)
    host = PluginHost()
    out = {}
    for label, (weighter, trainer_opts) in variants(host).items():
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(load_config(data=config(Path(tmp) / "run", weighter,
                                                      **trainer_opts)), host)
            results = trainer.fit()
            out[label] = fingerprint(trainer, results["metrics"]["test"])
        print(f"{label:28s} {out[label][:16]}", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, help="write the fingerprints here (JSON)")
    p.add_argument("--compare", type=Path, help="fingerprints of another checkout to compare")
    args = p.parse_args()
    got = run_all()
    if args.out:
        args.out.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    if args.compare:
        want = json.loads(args.compare.read_text())
        differ = sorted(k for k in set(want) & set(got) if want[k] != got[k])
        missing = sorted(set(want) ^ set(got))
        print(f"{len(got)} runs; {len(differ)} differ: {differ}; only on one side: {missing}")
        sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
