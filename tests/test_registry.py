"""Registry and plugin host: collisions, unknown names, broken plugins staying isolated."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mtlkit.errors import PluginError, RegistryError
from mtlkit.plugins import PluginHost
from mtlkit.registry import WeighterRegistry

from .helpers.fake_plugins import ClashPlugin, RaisingPlugin, TestPlugin, make_fake_distribution


def test_builtins_registered(host: PluginHost) -> None:
    assert {"equal", "static"} <= set(host.weighters.names())
    assert "mlp" in host.backbones
    assert "synthetic" in host.datasets
    assert "classification" in host.tasks


def test_registered_plugin_via_pm_register(host: PluginHost) -> None:
    plugin = TestPlugin()
    host.pm.register(plugin, name="test-plugin")
    try:
        assert "rec-rep" in host.weighters.names()
    finally:
        host.pm.unregister(plugin)
    assert "rec-rep" not in host.weighters.names()


def test_unknown_name_lists_names_and_closest(host: PluginHost) -> None:
    with pytest.raises(RegistryError) as err:
        host.weighters.resolve("equall")
    msg = str(err.value)
    assert "unknown weighter 'equall'" in msg
    assert "equal, static" in msg
    assert "did you mean 'equal'" in msg


@pytest.mark.bad_input("broken plugin")
@pytest.mark.parametrize("bad", ["", "Upper", "9x", "has space", "a.b"])
def test_invalid_names_rejected(bad: str) -> None:
    with pytest.raises(RegistryError, match="invalid weighter name"):
        WeighterRegistry().add(bad, "pkg.mod:Cls")


@pytest.mark.bad_input("broken plugin")
def test_invalid_target_rejected() -> None:
    reg = WeighterRegistry()
    with pytest.raises(RegistryError, match="not of the form"):
        reg.add("x", "no_colon_here")
    with pytest.raises(RegistryError, match="expected a class"):
        reg.add("x", 42)  # type: ignore[arg-type]


@pytest.mark.bad_input("broken plugin")
def test_class_not_implementing_interface() -> None:
    reg = WeighterRegistry()
    with pytest.raises(RegistryError, match="does not subclass"):
        reg.add("x", dict)


@pytest.mark.bad_input("broken plugin")
def test_lazy_target_checked_on_resolve() -> None:
    reg = WeighterRegistry()
    reg.add("missing", "no_such_module_abc:Thing")
    reg.add("wrong", "collections:OrderedDict")
    with pytest.raises(RegistryError, match="cannot import 'no_such_module_abc:Thing'"):
        reg.resolve("missing")
    with pytest.raises(RegistryError, match="does not subclass"):
        reg.resolve("wrong")


@pytest.mark.bad_input("broken plugin")
def test_collision_names_both_distributions(host: PluginHost) -> None:
    clash = ClashPlugin()
    host.add(clash, "clashy", dist="mtlkit-clashy", version="9.9")
    with pytest.warns(RuntimeWarning, match="registered by both"):
        names = host.weighters.names()
    assert "equal" not in names  # ambiguous: never a silent override
    assert "clash-only" in names  # the plugin's other names keep working
    with pytest.raises(RegistryError) as err:
        host.weighters.resolve("equal")
    assert "mtlkit (plugin 'mtlkit')" in str(err.value)
    assert "mtlkit-clashy (plugin 'clashy')" in str(err.value)


@pytest.mark.bad_input("broken plugin")
def test_collision_fatal_in_strict_mode(host: PluginHost, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTLKIT_STRICT_PLUGINS", "1")
    host.add(ClashPlugin(), "clashy", dist="mtlkit-clashy")
    with pytest.raises(PluginError, match="registered by both"):
        host.weighters.names()


@pytest.mark.bad_input("broken plugin")
def test_raising_hook_isolated_and_rolled_back(host: PluginHost) -> None:
    host.add(RaisingPlugin(), "raiser", dist="mtlkit-raiser")
    host.add(TestPlugin(), "good", dist="mtlkit-good")
    with pytest.warns(RuntimeWarning, match="'raiser'.*boom in hook"):
        names = host.weighters.names()
    assert "half-done" not in names
    assert "rec-rep" in names
    broken = {b.name: b for b in host.broken()}
    assert "RuntimeError: boom in hook" in (broken["raiser"].error or "")


GOOD_PLUGIN = """
from mtlkit.hookspecs import hookimpl

@hookimpl
def register_weighters(registry):
    registry.add("from-good-dist", "mtlkit.builtin.weighters:EqualWeighter")
"""


@pytest.fixture
def fake_dists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "site"
    make_fake_distribution(root, "mtlkit-broken", {"broken": "no_such_module_xyz"})
    make_fake_distribution(
        root / "g", "mtlkit-good", {"good": "fake_good_plugin"}, {"fake_good_plugin": GOOD_PLUGIN}
    )
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.syspath_prepend(str(root / "g"))
    yield root
    sys.modules.pop("fake_good_plugin", None)


@pytest.mark.bad_input("broken plugin")
def test_broken_entry_point_isolated(fake_dists: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MTLKIT_STRICT_PLUGINS", raising=False)
    monkeypatch.delenv("MTLKIT_DISABLE_PLUGINS", raising=False)
    with pytest.warns(RuntimeWarning, match="'broken' \\(mtlkit-broken\\) is broken"):
        host = PluginHost()
    assert "from-good-dist" in host.weighters.names()
    broken = {b.name: b for b in host.broken()}
    assert broken["broken"].dist == "mtlkit-broken"
    assert "ModuleNotFoundError" in (broken["broken"].error or "")
    good = {p.name: p for p in host.plugins()}["good"]
    assert good.dist == "mtlkit-good" and good.version == "0.1"
    assert good.registers["weighters"] == ["from-good-dist"]


@pytest.mark.bad_input("broken plugin")
def test_broken_entry_point_fatal_when_strict(
    fake_dists: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MTLKIT_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="no_such_module_xyz"):
        PluginHost()


@pytest.mark.parametrize("value", ["broken", "mtlkit-broken", "all", "broken,good"])
def test_disable_plugins(fake_dists: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("MTLKIT_DISABLE_PLUGINS", value)
    host = PluginHost()
    assert host.broken() == []
    assert ("from-good-dist" in host.weighters.names()) == (value in {"broken", "mtlkit-broken"})
    assert "equal" in host.weighters.names()  # built-ins always load
