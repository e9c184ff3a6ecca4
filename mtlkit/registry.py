"""Typed registries that plugins fill: names map to classes, resolved (imported) on first use."""

from __future__ import annotations

import difflib
import importlib
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from mtlkit.errors import RegistryError

_NAME = re.compile(r"^[a-z][a-z0-9_\-]{0,63}$")
_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


@dataclass
class Entry:
    """One registered name: where it points and which plugin (distribution) added it."""

    name: str
    target: type | str
    plugin: str
    dist: str
    summary: str = ""

    @property
    def target_path(self) -> str:
        if isinstance(self.target, str):
            return self.target
        return f"{self.target.__module__}:{self.target.__qualname__}"


def closest(name: str, names: list[str]) -> str:
    """A hint naming the available names and the closest match, for unknown-name errors."""
    if not names:
        return "none are registered (is the plugin installed?)"
    near = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return f"available: {', '.join(sorted(names))}{hint}"


class Registry:
    """Base registry: validates names and targets, rejects a name registered twice."""

    kind: ClassVar[str] = "component"
    interface: ClassVar[str] = ""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._clashes: dict[str, list[Entry]] = {}
        self._owner: tuple[str, str] = ("mtlkit", "mtlkit")
        self._staged: list[Entry] | None = None

    # --- used by plugins -------------------------------------------------------------------
    def add(self, name: str, target: type | str, *, summary: str = "") -> None:
        """Register ``target`` (a class, or ``"module:Class"`` imported on first use)."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise RegistryError(
                f"invalid {self.kind} name {name!r}: use lowercase letters, digits, '_' or '-',"
                " starting with a letter"
            )
        if isinstance(target, str):
            if not _TARGET.match(target):
                raise RegistryError(
                    f"{self.kind} {name!r}: target {target!r} is not of the form 'module:Class'"
                )
        elif isinstance(target, type):
            self._check_class(name, target)
        else:
            raise RegistryError(
                f"{self.kind} {name!r}: expected a class or 'module:Class', got {target!r}"
            )
        plugin, dist = self._owner
        entry = Entry(name, target, plugin, dist, summary)
        if self._staged is not None:
            self._staged.append(entry)
        else:
            self._commit(entry)

    # --- used by the plugin host -----------------------------------------------------------
    def _begin(self, plugin: str, dist: str) -> None:
        self._owner = (plugin, dist)
        self._staged = []

    def _end(self, ok: bool) -> list[str]:
        """Commit what one plugin staged (only if its hook succeeded); returns clash messages."""
        staged, self._staged = self._staged or [], None
        messages = []
        if ok:
            for entry in staged:
                msg = self._commit(entry)
                if msg:
                    messages.append(msg)
        self._owner = ("mtlkit", "mtlkit")
        return messages

    def _drop_plugin(self, plugin: str) -> None:
        """Forget every name a (now broken) plugin added."""
        for name in [n for n, e in self._entries.items() if e.plugin == plugin]:
            del self._entries[name]

    def _commit(self, entry: Entry) -> str | None:
        existing = self._entries.get(entry.name) or (self._clashes.get(entry.name) or [None])[0]
        if existing is None:
            self._entries[entry.name] = entry
            return None
        clash = self._clashes.setdefault(entry.name, [existing])
        clash.append(entry)
        self._entries.pop(entry.name, None)
        return self._clash_message(entry.name)

    def _clash_message(self, name: str) -> str:
        owners = " and ".join(f"{e.dist} (plugin {e.plugin!r})" for e in self._clashes[name])
        return (
            f"{self.kind} name {name!r} is registered by both {owners}; uninstall one, or disable"
            " one with MTLKIT_DISABLE_PLUGINS"
        )

    # --- lookup ----------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def entry(self, name: str) -> Entry:
        if name in self._clashes:
            raise RegistryError(self._clash_message(name))
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(
                f"unknown {self.kind} {name!r}; {closest(name, self.names())}"
            ) from None

    def resolve(self, name: str) -> Any:
        """Import (if needed) and return the class registered as ``name``, checked."""
        entry = self.entry(name)
        target = entry.target
        if isinstance(target, str):
            module_name, _, attr = target.partition(":")
            try:
                obj: Any = importlib.import_module(module_name)
                for part in attr.split("."):
                    obj = getattr(obj, part)
            except Exception as exc:
                raise RegistryError(
                    f"{self.kind} {name!r} from {entry.dist}: cannot import {target!r}:"
                    f" {type(exc).__name__}: {exc}"
                ) from exc
            if not isinstance(obj, type):
                raise RegistryError(
                    f"{self.kind} {name!r} from {entry.dist}: {target!r} is not a class"
                )
            self._check_class(name, obj, entry.dist)
            entry.target = obj
            return obj
        return target

    def _check_class(self, name: str, cls: type, dist: str | None = None) -> None:
        module_name, _, attr = self.interface.partition(":")
        base = getattr(importlib.import_module(module_name), attr)
        where = f" from {dist}" if dist else ""
        if not issubclass(cls, base):
            raise RegistryError(
                f"{self.kind} {name!r}{where}: {cls.__module__}.{cls.__qualname__} does not"
                f" subclass {base.__module__}.{base.__qualname__}"
            )
        abstract = sorted(getattr(cls, "__abstractmethods__", ()))
        if abstract:
            raise RegistryError(
                f"{self.kind} {name!r}{where}: {cls.__qualname__} does not implement"
                f" {', '.join(abstract)}"
            )


class TaskRegistry(Registry):
    kind = "task"
    interface = "mtlkit.task:Task"


class BackboneRegistry(Registry):
    kind = "backbone"
    interface = "mtlkit.backbone:Backbone"


class WeighterRegistry(Registry):
    kind = "weighter"
    interface = "mtlkit.weighter:Weighter"


class DatasetRegistry(Registry):
    """The ``datasets`` registry holds data modules (:class:`mtlkit.data.DataModule`); a run
    config's ``data:`` key picks one by name. Both names predate "data module" and stay, since
    configs (and the hashes that identify sweep cells) spell them."""

    kind = "dataset"
    interface = "mtlkit.data:DataModule"


class ArchitectureRegistry(Registry):
    kind = "architecture"
    interface = "mtlkit.architecture:Architecture"


@dataclass(frozen=True)
class ComponentKind:
    """One kind of plugin component: its registry, its hook and where a config names one.

    :data:`COMPONENT_KINDS` is the one list of kinds; plugin loading, config resolution and the
    config reference all read it, so a new kind is one row here plus its hook spec.
    """

    registry: type[Registry]
    plural: str
    """The registry's name (``host.registry(plural)``); its hook is ``register_<plural>``."""
    config_key: str
    """The run config field that names the component (a list of them when ``many``)."""
    title: str
    many: bool = False

    @property
    def hook(self) -> str:
        return f"register_{self.plural}"


COMPONENT_KINDS: tuple[ComponentKind, ...] = (
    ComponentKind(BackboneRegistry, "backbones", "backbone", "Backbones"),
    ComponentKind(ArchitectureRegistry, "architectures", "architecture", "Architectures"),
    ComponentKind(TaskRegistry, "tasks", "tasks", "Tasks", many=True),
    ComponentKind(WeighterRegistry, "weighters", "weighter", "Weighters"),
    ComponentKind(DatasetRegistry, "datasets", "data", "Data modules"),
)
"""Every component kind, in the order the config reference documents them."""
