"""mtlkit's conformance kit: point it at your weighter, task, backbone, dataset or architecture.

In the spirit of scikit-learn's ``check_estimator``: each ``check_*`` function runs every check of
one component and raises a single AssertionError naming each violated property; each ``*_checks``
function returns the same checks as named :class:`Check` objects, so a plugin's test module is::

    from mtlkit.testing import parametrize_checks, weighter_checks
    from my_plugin.method import MyWeighter

    @parametrize_checks(weighter_checks(MyWeighter, options=[{}, {"rep": True}]))
    def test_conformance(check): check()

This subpackage imports torch; ``import mtlkit`` itself never imports it (nor this package).
"""

from __future__ import annotations

from mtlkit.testing._checks import (
    Check,
    SkipCheck,
    parametrize_checks,
    registered,
    run_checks,
)
from mtlkit.testing.architectures import architecture_checks, check_architecture
from mtlkit.testing.backbones import backbone_checks, check_backbone
from mtlkit.testing.data import check_datamodule, datamodule_checks
from mtlkit.testing.tasks import check_task, task_checks
from mtlkit.testing.weighters import (
    GRAD_KINDS,
    FakeTrainer,
    WeighterTraits,
    check_weighter,
    raw_grads,
    roundtrip,
    weighter_checks,
)

__all__ = [
    "GRAD_KINDS",
    "Check",
    "FakeTrainer",
    "SkipCheck",
    "WeighterTraits",
    "architecture_checks",
    "backbone_checks",
    "check_architecture",
    "check_backbone",
    "check_datamodule",
    "check_task",
    "check_weighter",
    "datamodule_checks",
    "parametrize_checks",
    "raw_grads",
    "registered",
    "roundtrip",
    "run_checks",
    "task_checks",
    "weighter_checks",
]
