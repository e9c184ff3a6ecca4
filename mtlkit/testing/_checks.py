"""Named checks, how they fail, and how a test suite runs or parametrises them."""

from __future__ import annotations

import functools
import unittest
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from mtlkit.plugins import PluginHost

SkipCheck = unittest.SkipTest
"""Raised by a check that does not apply (pytest reports it as a skip, ``run_checks`` lists it)."""


class Check(NamedTuple):
    """One conformance check: an ``id`` and a callable that raises AssertionError on a violation.

    Calling a ``Check`` prefixes any failure with its id, and turns a crash (any other exception)
    into an AssertionError naming it, so a report always says which property of which component
    broke. A ``(id, run)`` pair, so it unpacks like one.
    """

    id: str
    run: Callable[[], None]

    def __call__(self) -> None:
        try:
            single_threaded(self.run)()
        except SkipCheck:
            raise
        except AssertionError as exc:
            raise AssertionError(f"{self.id}: {exc}") from exc
        except Exception as exc:
            raise AssertionError(f"{self.id}: raised {type(exc).__name__}: {exc}") from exc


def single_threaded(fn: Callable[[], None]) -> Callable[[], None]:
    """``fn`` run with one intra-op torch thread: the kit's inputs are small, so more threads only
    add synchronisation (on a busy machine, milliseconds per tiny operation: 30x slower checks).
    The caller's thread count is restored."""

    @functools.wraps(fn)
    def run() -> None:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            fn()
        finally:
            torch.set_num_threads(threads)

    return run


def run_checks(checks: Iterable[Check], what: str) -> None:
    """Run every check and raise one AssertionError listing each failure (skips are not failures).

    All checks run even after a failure, so one call reports everything a component violates.
    """
    checks = list(checks)
    failures: list[str] = []
    for check in checks:
        try:
            check()
        except SkipCheck:
            continue
        except AssertionError as exc:
            failures.append(str(exc))
    if failures:
        lines = "\n".join(f"- {f}" for f in failures)
        raise AssertionError(f"{what}: {len(failures)} of {len(checks)} checks failed:\n{lines}")


def parametrize_checks(checks: Sequence[Check]) -> Any:
    """``pytest.mark.parametrize("check", checks)`` with each check's id as the test id.

    A plugin's whole conformance test is then ``@parametrize_checks(weighter_checks(Mine))`` on
    ``def test_conformance(check): check()``.
    """
    import pytest

    checks = list(checks)
    return pytest.mark.parametrize("check", checks, ids=[c.id for c in checks])


def registered(kind: str, dist: str, *, host: PluginHost | None = None) -> dict[str, type]:
    """Every class distribution ``dist`` registers under ``kind``, by name, resolved (checked).

    ``kind`` is ``tasks``, ``backbones``, ``weighters``, ``datasets`` or ``architectures``. Test
    lists derived from this cannot forget a name; an empty result is an error (is the plugin
    installed?), never a silently empty parametrisation.
    """
    from mtlkit.plugins import PluginHost

    host = host if host is not None else PluginHost()
    registry = host.registry(kind)
    names = [e.name for e in registry.entries() if e.dist == dist]
    if not names:
        broken = [f"{p.name}: {p.error}" for p in host.broken() if p.dist == dist]
        hint = f"; broken: {broken}" if broken else " (is it installed?)"
        raise AssertionError(f"{dist} registers no {kind}{hint}")
    return {name: registry.resolve(name) for name in names}


def options_id(options: Mapping[str, Any] | Callable[..., Any]) -> str:
    """A short test-id suffix for an options set: ``-k=v`` per key (``-<fn>`` for a factory)."""
    if callable(options):
        return f"-{getattr(options, '__name__', 'options')}"
    return "".join(f"-{k}={v}" for k, v in options.items())
