"""One small generic registry, used for tasks, encoders, datasets, attack suites and defenses,
and the discovery of plugins through entry points.

A :class:`Registry` maps names to entries (a spec object or a factory) and remembers where each
entry came from: ``"built-in"`` for ssl_robust's own, the distribution name for an installed
plugin, ``"plugin module M"`` for ``--plugin M`` / ``plugins = ["M"]``, otherwise the top-level
package of the code that registered it. Registering a taken name is an error naming the owner,
unless it is the same object or ``overwrite=True``. Lookups take a name or the entry itself.

Installed packages declare plugins as entry points of the group ``ssl_robust.plugins``::

    [project.entry-points."ssl_robust.plugins"]
    normals = "ssl_normals.plugin"          # a module that registers on import
    # or "pkg.module:register" (a function called once) or "pkg.module:SPEC" (a spec object)

They are read lazily: on the first lookup that misses and on the first listing, never by
``import ssl_robust``. A plugin that fails to load becomes a :class:`RuntimeWarning` naming the
plugin and the error (and is listed in later "unknown name" errors), never a crash. Set the
environment variable ``SSL_ROBUST_NO_PLUGINS=1`` to turn discovery off.

Example:
    >>> reg: Registry[int] = Registry("number")
    >>> reg.register("one", 1)
    1
    >>> reg.get("one"), reg.origin("one")
    (1, 'built-in')
    >>> try:
    ...     reg.register("one", 2)
    ... except ValueError as err:
    ...     print(str(err).split(";")[0])
    number 'one' is already registered by ssl_robust (built-in)
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Generic, TypeVar

from . import _checks

__all__ = [
    "BUILT_IN",
    "ENTRY_POINT_GROUP",
    "NO_PLUGINS_ENV",
    "PluginFailure",
    "Registry",
    "import_plugin",
    "load_plugins",
    "plugin_failures",
    "plugin_note",
    "registries",
]

#: Origin of the entries ssl_robust registers itself.
BUILT_IN = "built-in"
#: The entry-point group plugins declare.
ENTRY_POINT_GROUP = "ssl_robust.plugins"
#: Set this environment variable (to anything but ``""``/``"0"``) to turn discovery off.
NO_PLUGINS_ENV = "SSL_ROBUST_NO_PLUGINS"

T = TypeVar("T")


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that did not load: its name, the distribution that declares it, the error."""

    name: str
    distribution: str
    error: str

    def __str__(self) -> str:
        return f"{self.name} (from {self.distribution}): {self.error}"


# ----------------------------------------------------------------------------- origins
_loading_origin: list[str] = []  # stack: the plugin being loaded (its distribution)
_ALL: dict[str, Registry[Any]] = {}


def _caller_origin(depth: int) -> str:
    """Who registers: the plugin being loaded, ssl_robust itself (``"built-in"``), or the
    top-level package of the first caller outside ssl_robust's functions."""
    if _loading_origin:
        return _loading_origin[-1]
    frame: Any = sys._getframe(depth)
    while frame is not None:
        module = str(frame.f_globals.get("__name__", "__main__"))
        inside = module == "ssl_robust" or module.startswith("ssl_robust.")
        if not inside or frame.f_code.co_name == "<module>":
            return BUILT_IN if inside else module.split(".")[0]
        frame = frame.f_back
    return BUILT_IN


def _who(origin: str) -> str:
    return "ssl_robust (built-in)" if origin == BUILT_IN else origin


class Registry(Generic[T]):
    """Names → entries of one kind, with their origins (the one registry type of the package).

    Args:
        kind: what the entries are, for messages (``"task"``, ``"encoder"``, ...).
        entry_type: the class every entry must be an instance of (e.g. ``TaskSpec``): any
            other object (an entry point that points at something that is not a spec) is
            refused by :meth:`check`, naming the type expected and got.
        check: a further check called on every entry before it is registered; raises for a
            bad entry and may return a normalized one.
        plural: the plural of ``kind`` in messages (default ``kind + "s"``).
        sort: :meth:`names` sorted by name (else in registration order).
        choices: the words before the list in "unknown name" errors.

    Example:
        >>> reg: Registry[str] = Registry("colour")
        >>> _ = reg.register("red", "#f00")
        >>> "red" in reg, reg.names(), reg.get("red")
        (True, ['red'], '#f00')
    """

    def __init__(
        self,
        kind: str,
        *,
        entry_type: type[T] | None = None,
        check: Callable[[Any], T] | None = None,
        plural: str | None = None,
        sort: bool = False,
        choices: str | None = None,
    ) -> None:
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self.sort = sort
        self.choices = choices or f"valid {self.plural} are"
        self.entry_type = entry_type
        self._check = check
        self._entries: dict[str, T] = {}
        self._origins: dict[str, str] = {}
        _ALL[kind] = self

    # ------------------------------------------------------------------ registration
    def check(self, entry: object) -> T:
        """``entry`` if it is an instance of :attr:`entry_type` and passes the further
        check (returning what that check returns).

        Raises:
            SSLRobustTypeError: an entry of another type, naming both.
        """
        if self.entry_type is not None and not isinstance(entry, self.entry_type):
            raise _checks.SSLRobustTypeError(
                f"a {self.kind} must be a {self.entry_type.__name__} (or a registered "
                f"{self.kind} name); got {type(entry).__name__} {entry!r}"
            )
        return self._check(entry) if self._check is not None else entry  # type: ignore[return-value]

    def add(self, entry: Any, *, overwrite: bool = False) -> T:
        """Register ``entry`` under its own ``name`` attribute (checked first); see
        :meth:`register`."""
        checked = self.check(entry)
        return self.register(checked.name, checked, overwrite=overwrite)  # type: ignore[attr-defined]

    def register(
        self, name: str, entry: Any, *, overwrite: bool = False, origin: str | None = None
    ) -> T:
        """Register ``entry`` under ``name``; returns the (checked) entry.

        Raises:
            SSLRobustTypeError: a name that is not a non-empty string; an entry the
                registry's check refuses.
            SSLRobustValueError: the name is taken by another entry (naming who registered
                it), unless ``overwrite=True``.
        """
        if not isinstance(name, str) or not name.strip():
            raise _checks.SSLRobustTypeError(
                f"a {self.kind} name must be a non-empty string; got {name!r}"
            )
        checked: T = self.check(entry)
        who = origin or _caller_origin(2)
        old = self._entries.get(name)
        if old is not None and old is not checked and old is not entry and not overwrite:
            raise _checks.SSLRobustValueError(
                f"{self.kind} {name!r} is already registered by {_who(self._origins[name])}; pass "
                f"overwrite=True to replace it, or register it under another name"
            )
        if old is not None and overwrite and old is not checked:
            warnings.warn(
                f"{self.kind} {name!r} of {self._origins[name]} replaced by {who}",
                UserWarning,
                stacklevel=3,
            )
        if old is None or old is not checked:
            self._origins[name] = who
        self._entries[name] = checked
        return checked

    def unregister(self, name: str) -> T:
        """Remove ``name`` (e.g. in a test's teardown); returns its entry."""
        self._origins.pop(name, None)
        return self._entries.pop(name)

    # ------------------------------------------------------------------ lookups
    def _find(self, name: str) -> T | None:
        entry = self._entries.get(name)
        if entry is None and load_plugins():  # first miss: read the plugins, once
            entry = self._entries.get(name)
        return entry

    def get(self, key: str | T) -> T:
        """The entry of ``key`` (a name), or ``key`` itself when it is a registered entry or
        passes the registry's check (an unregistered spec object).

        Raises:
            SSLRobustValueError: an unknown name, listing the registered names and the
                plugins that failed to load.
        """
        if isinstance(key, str):
            entry = self._find(key)
            if entry is not None:
                return entry
            raise _checks.SSLRobustValueError(self.unknown_message(key))
        if any(key is e for e in self._entries.values()):
            return key
        return self.check(key)

    def unknown_message(self, name: object) -> str:
        """The "unknown name" message: the valid names, a close match, failed plugins."""
        names = self.names()
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f" — did you mean {close[0]!r}?" if close else ""
        return (
            f"unknown {self.kind} {name!r}{hint}; {self.choices}: {', '.join(names)}"
            + plugin_note()
        )

    def check_name(self, where: str, value: object) -> str:
        """``value`` if it is a registered name, else an error in the form of
        ``check_choice`` (``"<where> must be one of ...; got ..."``) with the plugin note."""
        if isinstance(value, str) and value in self:
            return value
        choices = ", ".join(repr(n) for n in self.names())
        raise _checks.SSLRobustValueError(
            f"{where} must be one of {choices}; got {value!r}" + plugin_note()
        )

    def names(self) -> list[str]:
        """The registered names, in registration order or sorted (plugins are read first)."""
        load_plugins()
        return sorted(self._entries) if self.sort else list(self._entries)

    def origin(self, name: str) -> str:
        """Where ``name`` comes from: ``"built-in"``, a distribution, or a package."""
        self.get(name)
        return self._origins[name]

    def items(self) -> list[tuple[str, T]]:
        """``(name, entry)`` pairs in registration order."""
        load_plugins()
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._find(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"


def plugin_note() -> str:
    """What unknown-name errors add: the plugins that failed to load, or how to load one."""
    failed = plugin_failures()
    if failed:
        return "; plugins that failed to load: " + "; ".join(map(str, failed))
    if not _discovery_enabled():
        return f" (plugin discovery is off: {NO_PLUGINS_ENV} is set)"
    return (
        " (a package that registers on import must be installed with an "
        f"'{ENTRY_POINT_GROUP}' entry point, or imported first: --plugin MODULE, or "
        "plugins = [...] in a config)"
    )


def registries() -> dict[str, Registry[Any]]:
    """Every registry of the package, by kind (``task``, ``encoder``, ``dataset``, ...)."""
    for module in ("tasks", "encoders.registry", "data.registry", "bench.suites"):
        importlib.import_module(f"ssl_robust.{module}")
    return dict(_ALL)


# ----------------------------------------------------------------------------- discovery
_state: dict[str, Any] = {"loaded": False, "loading": False, "failures": []}


def _discovery_enabled() -> bool:
    return os.environ.get(NO_PLUGINS_ENV, "") in ("", "0")


def plugin_failures() -> list[PluginFailure]:
    """The plugins that failed to load so far (each also gave a RuntimeWarning)."""
    return list(_state["failures"])


@contextlib.contextmanager
def _origin(name: str) -> Iterator[None]:
    _loading_origin.append(name)
    try:
        yield
    finally:
        _loading_origin.pop()


def _use(obj: object, where: str) -> None:
    """Act on what an entry point names: a module (registered on import), a ``register()``
    function (called), or a spec object (registered in its registry)."""
    if isinstance(obj, ModuleType):
        return
    from .tasks import TaskSpec  # the spec types, looked up late (no import cycle)

    kinds: list[tuple[type, Callable[[Any], Any]]] = [(TaskSpec, _register_task)]
    with contextlib.suppress(ImportError):
        from .encoders.registry import EncoderSpec, register_encoder

        kinds.append((EncoderSpec, register_encoder))
    with contextlib.suppress(ImportError):
        from .data.registry import DatasetEntry, register_dataset

        kinds.append((DatasetEntry, register_dataset))
    with contextlib.suppress(ImportError):
        from .bench.suites import DefenseSpec, SuiteSpec, register_defense, register_suite

        kinds += [(SuiteSpec, register_suite), (DefenseSpec, register_defense)]
    for cls, register in kinds:
        if isinstance(obj, cls):
            register(obj)
            return
    if callable(obj) and not isinstance(obj, type):
        obj()
        return
    raise _checks.SSLRobustTypeError(
        f"entry point {where} points at {type(obj).__name__} {obj!r}, which is not a module, "
        "a register() function or a spec (TaskSpec, EncoderSpec, DatasetEntry, SuiteSpec, "
        "DefenseSpec)"
    )


def _register_task(spec: Any) -> None:
    from .tasks import register_task

    register_task(spec)


def load_plugins(*, reload: bool = False) -> bool:
    """Read the ``ssl_robust.plugins`` entry points once (done lazily by every registry).

    Returns:
        True when this call loaded plugins (so a lookup may retry), False when they were
        loaded before, discovery is off, or a load is under way.
    """
    if (_state["loaded"] and not reload) or _state["loading"] or not _discovery_enabled():
        return False
    _state["loading"] = True
    try:
        from importlib.metadata import entry_points

        eps = list(entry_points(group=ENTRY_POINT_GROUP))
        for ep in sorted(eps, key=lambda e: e.name):
            dist = getattr(getattr(ep, "dist", None), "name", None) or ep.value.split(".")[0]
            if reload and any(f.name == ep.name for f in _state["failures"]):
                continue
            try:
                with _origin(str(dist)), warnings.catch_warnings():
                    warnings.simplefilter("default")
                    _use(ep.load(), f"{ep.name} = {ep.value!r}")
            except Exception as exc:  # a broken plugin never breaks ssl_robust
                failure = PluginFailure(ep.name, str(dist), f"{type(exc).__name__}: {exc}")
                _state["failures"].append(failure)
                warnings.warn(
                    f"ssl_robust plugin {ep.name!r} (distribution {dist}, entry point "
                    f"{ep.value!r}) failed to load and is skipped: {failure.error}",
                    RuntimeWarning,
                    stacklevel=3,
                )
    finally:
        _state["loading"] = False
        _state["loaded"] = True
    return True


def import_plugin(module: str) -> ModuleType:
    """Import ``module`` (an uninstalled plugin: ``--plugin MODULE``, ``plugins = [...]``);
    what it registers is recorded as ``plugin module <module>``.

    Raises:
        ModuleNotFoundError: the module cannot be found (with a PYTHONPATH hint).
    """
    if not isinstance(module, str) or not module:
        raise _checks.SSLRobustTypeError(f"a plugin is a module name; got {module!r}")
    if module in sys.modules:
        return sys.modules[module]
    try:
        with _origin(f"plugin module {module}"):
            return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module.startswith(exc.name):
            raise ModuleNotFoundError(
                f"plugin module {module!r} not found; install it or add its folder to PYTHONPATH"
            ) from exc
        raise
