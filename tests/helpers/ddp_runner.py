"""Run one training job from a JSON config with the test plugins registered (torchrun target)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mtlkit import distributed
from mtlkit.config import load_config
from mtlkit.plugins import PluginHost
from mtlkit.trainer import Trainer
from tests.helpers.fake_plugins import TestPlugin


def main() -> None:
    cfg = json.loads(Path(sys.argv[1]).read_text())
    host = PluginHost()
    host.pm.register(TestPlugin(), name="test-plugin")
    trainer = Trainer(load_config(data=cfg), host)
    results = trainer.fit()
    if trainer.is_main:
        Path(cfg["output_dir"], "metrics.json").write_text(json.dumps(results["metrics"]))
    distributed.shutdown()


if __name__ == "__main__":
    main()
