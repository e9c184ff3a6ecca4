"""Plugin discovery: entry points loaded one by one, so one broken plugin never breaks the rest.

Environment:
  ``MTLKIT_DISABLE_PLUGINS=a,b`` (entry-point or distribution names, or ``all``) skips plugins;
  ``MTLKIT_STRICT_PLUGINS=1`` turns any plugin failure or name clash into an error.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from mtlkit import hookspecs
from mtlkit.errors import PluginError
from mtlkit.registry import COMPONENT_KINDS, Registry

ENTRY_POINT_GROUP = "mtlkit"
BUILTIN = "mtlkit"


@dataclass
class PluginInfo:
    """One plugin as ``mtlkit plugins`` shows it."""

    name: str
    dist: str
    version: str
    registers: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "distribution": self.dist,
            "version": self.version,
        }
        if self.error is None:
            out.update({k: [str(n) for n in v] for k, v in self.registers.items()})
        else:
            out["error"] = self.error
        return out


def _env_list(name: str) -> set[str]:
    return {p.strip() for p in os.environ.get(name, "").split(",") if p.strip()}


def strict_mode() -> bool:
    return os.environ.get("MTLKIT_STRICT_PLUGINS", "").lower() in {"1", "true", "yes", "on"}


class PluginHost:
    """Owns the pluggy manager and the registries built from every registered plugin.

    Registries are rebuilt whenever the set of plugins changes, so tests can simply call
    ``host.pm.register(obj, name=...)`` and ``host.pm.unregister(obj)``.
    """

    def __init__(self, *, load_entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.dists: dict[str, tuple[str, str]] = {}
        self.load_errors: list[PluginInfo] = []
        self._cache_key: tuple[int, ...] | None = None
        self._registries: dict[str, Registry] = {}
        self._infos: list[PluginInfo] = []
        from mtlkit.builtin import plugin as builtin_plugin

        self.add(builtin_plugin, BUILTIN, dist="mtlkit", version=_version("mtlkit"))
        if load_entry_points:
            self.load_entry_points()

    # --- discovery -------------------------------------------------------------------------
    def add(self, plugin: object, name: str, *, dist: str | None = None, version: str = "") -> None:
        """Register a plugin object under ``name`` with its distribution for reports."""
        self.pm.register(plugin, name=name)
        self.dists[name] = (dist or name, version)

    def load_entry_points(self) -> None:
        disabled = _env_list("MTLKIT_DISABLE_PLUGINS")
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist_name = ep.dist.name if ep.dist is not None else ep.name
            version = ep.dist.version if ep.dist is not None else ""
            if "all" in disabled or ep.name in disabled or dist_name in disabled:
                continue
            if self.pm.has_plugin(ep.name):
                continue
            try:
                module = ep.load()
                self.add(module, ep.name, dist=dist_name, version=version)
                self.pm.check_pending()
            except Exception as exc:
                if self.pm.has_plugin(ep.name):
                    self.pm.unregister(name=ep.name)
                self._fail(PluginInfo(ep.name, dist_name, version, error=_describe(exc)))

    def _fail(self, info: PluginInfo) -> None:
        msg = f"mtlkit plugin {info.name!r} ({info.dist}) is broken: {info.error}"
        if strict_mode():
            raise PluginError(msg + " [MTLKIT_STRICT_PLUGINS is set]")
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        self.load_errors.append(info)

    # --- registries ------------------------------------------------------------------------
    def _build(self) -> None:
        plugins = self.pm.list_name_plugin()
        key = tuple(id(p) for _, p in plugins)
        if key == self._cache_key:
            return
        registries: dict[str, Registry] = {k.plural: k.registry() for k in COMPONENT_KINDS}
        infos: list[PluginInfo] = []
        # builtins first so their names win clashes in reports, then plugins by name
        ordered = sorted(plugins, key=lambda np: (np[0] != BUILTIN, np[0]))
        for name, plugin in ordered:
            dist, version = self.dists.get(name, (name, ""))
            info = PluginInfo(name, dist, version)
            clashes: list[str] = []
            try:
                for kind in COMPONENT_KINDS:
                    impl = getattr(self.pm.hook, kind.hook)
                    for hookimpl in impl.get_hookimpls():
                        if hookimpl.plugin is not plugin:
                            continue
                        registry = registries[kind.plural]
                        registry._begin(name, dist)
                        try:
                            hookimpl.function(registry=registry)
                        except BaseException:
                            registry._end(ok=False)
                            raise
                        else:
                            added = [e.name for e in registry._staged or []]
                            clashes += registry._end(ok=True)
                            info.registers.setdefault(kind.plural, []).extend(added)
            except Exception as exc:
                info.error = _describe(exc)
                info.registers = {}
                for registry in registries.values():
                    registry._drop_plugin(name)
            if info.error is not None:
                self._fail(info)
                self.load_errors = [e for e in self.load_errors if e.name != name] + [info]
            for clash in clashes:
                if strict_mode():
                    raise PluginError(clash + " [MTLKIT_STRICT_PLUGINS is set]")
                warnings.warn(clash, RuntimeWarning, stacklevel=2)
            if info.error is None:
                infos.append(info)
        self._registries = registries
        self._infos = infos
        self._cache_key = key

    def registry(self, kind: str) -> Registry:
        """The registry of ``kind``, a :data:`~mtlkit.registry.COMPONENT_KINDS` plural
        (``tasks``, ``backbones``, ``weighters``, ``datasets``, ``architectures``)."""
        self._build()
        try:
            return self._registries[kind]
        except KeyError:
            known = ", ".join(k.plural for k in COMPONENT_KINDS)
            raise KeyError(f"no component kind {kind!r}; the kinds are {known}") from None

    @property
    def tasks(self) -> Registry:
        return self.registry("tasks")

    @property
    def backbones(self) -> Registry:
        return self.registry("backbones")

    @property
    def weighters(self) -> Registry:
        return self.registry("weighters")

    @property
    def datasets(self) -> Registry:
        return self.registry("datasets")

    @property
    def architectures(self) -> Registry:
        return self.registry("architectures")

    def plugins(self) -> list[PluginInfo]:
        """Working plugins with what they register."""
        self._build()
        return list(self._infos)

    def broken(self) -> list[PluginInfo]:
        """Plugins that failed to import or whose hook raised."""
        self._build()
        return list(self.load_errors)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return getattr(sys.modules.get(dist), "__version__", "")


_HOST: PluginHost | None = None


def get_plugin_manager() -> PluginHost:
    """The process-wide plugin host, created (and entry points loaded) on first use."""
    global _HOST
    if _HOST is None:
        _HOST = PluginHost()
    return _HOST


def reset_plugin_manager(host: PluginHost | None = None) -> None:
    """Replace the process-wide host (tests use this for isolation)."""
    global _HOST
    _HOST = host


__all__ = ["PluginHost", "PluginInfo", "get_plugin_manager", "reset_plugin_manager"]
