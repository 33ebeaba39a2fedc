"""Plugin loading: lazy, once per process, through the ``facekit`` entry-point group.

- ``FACEKIT_PLUGINS=a,b`` loads only the named entry points (an allow-list; empty string = none);
- ``FACEKIT_DISABLE_PLUGINS=a,b`` skips the named entry points (a block-list).

``facekit plugins`` lists the plugins these leave out, and warns of a name in either that no installed plugin has.

The builtins register through the same group (entry point ``builtin``), so they can be disabled like any other.
A plugin that fails to import (or implements a misspelled hook) is never swallowed and never takes the others down:
it is recorded as a :class:`LoadFailure`, left out, reported by ``facekit plugins`` and in a warning (naming the
distribution, the entry point and how to disable it) as soon as anything asks for a registry, and named when a
component it might have registered is not found (:meth:`PluginState.raise_failures` turns the failures into a
:class:`~facekit.errors.PluginError` for callers that want that).
"""

from __future__ import annotations

import importlib.metadata as metadata
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from types import ModuleType
from typing import NamedTuple

import pluggy

from facekit import hookspecs
from facekit.errors import PluginError

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "facekit"


@dataclass(frozen=True)
class PluginInfo:
    """A loaded plugin: its entry-point name, distribution, version and the hooks it implements."""

    name: str
    distribution: str
    version: str
    module: str
    hooks: tuple[str, ...]


@dataclass(frozen=True)
class LoadFailure:
    """A plugin that could not be loaded, with what to do about it."""

    name: str
    distribution: str
    entry_point: str
    error: str

    def message(self) -> str:
        return (
            f"plugin {self.name!r} (distribution {self.distribution}, entry point {self.entry_point}) "
            f"failed to load: {self.error}. Fix or uninstall it, or set FACEKIT_DISABLE_PLUGINS={self.name} to skip it"
        )


class SkippedPlugin(NamedTuple):
    """An installed plugin the environment left out: its entry-point name, its distribution and ``by``, which
    variable left it out, as `facekit plugins` and a component's "unknown" message say it ("FACEKIT_DISABLE_PLUGINS",
    "FACEKIT_PLUGINS, which does not name it")."""

    name: str
    distribution: str
    by: str


def left_out_by(name: str, allow: set[str] | None, block: set[str]) -> str:
    """Which of FACEKIT_PLUGINS (``allow``, None when unset) and FACEKIT_DISABLE_PLUGINS (``block``) leave the plugin
    ``name`` out, in words; '' when neither does. Before, every such plugin was said to be left out "by
    FACEKIT_PLUGINS or FACEKIT_DISABLE_PLUGINS", and with both set the user had to find which."""
    reasons = []
    if allow is not None and name not in allow:
        reasons.append("FACEKIT_PLUGINS, which does not name it" if allow else "FACEKIT_PLUGINS, which is empty")
    if name in block:
        reasons.append("FACEKIT_DISABLE_PLUGINS")
    return ", and by ".join(reasons)


@dataclass
class PluginState:
    """The plugin manager plus what happened while loading."""

    manager: pluggy.PluginManager
    plugins: list[PluginInfo] = field(default_factory=list)
    failures: list[LoadFailure] = field(default_factory=list)
    #: The installed plugins that FACEKIT_PLUGINS or FACEKIT_DISABLE_PLUGINS left out, each with which.
    skipped: list[SkippedPlugin] = field(default_factory=list)
    #: (variable, name) for each name FACEKIT_PLUGINS / FACEKIT_DISABLE_PLUGINS gives that no installed plugin has.
    unknown_names: list[tuple[str, str]] = field(default_factory=list)
    #: Every installed plugin's entry-point name (loaded, failed or left out), sorted.
    installed: list[str] = field(default_factory=list)
    #: Whether the failures were logged (get_plugin_manager, once per process).
    warned: bool = False

    def raise_failures(self) -> None:
        """Raise a :class:`PluginError` describing every plugin that failed to load, if any."""
        if self.failures:
            raise PluginError("; ".join(f.message() for f in self.failures))


def _names_from_env(var: str) -> set[str] | None:
    value = os.environ.get(var)
    if value is None:
        return None
    return {n.strip() for n in value.split(",") if n.strip()}


def _entry_points() -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: (ep.name != "builtin", ep.name))


def misgrouped_entry_points() -> list[tuple[str, str, str]]:
    """(group, entry-point name, distribution) of every installed entry point in a group that looks meant for
    facekit's but is not it: another case (``FaceKit``; groups match exactly), a plugins group (``facekit.plugins``,
    ``facekit_plugin``) or a misspelling (``facekt``, ``face-kit``). Python ignores those without a word, so such a
    plugin never loads. A plugin's own group (``facekit_serve.storage``) is none of these. Read by ``facekit plugins``
    only (it scans every distribution)."""
    import difflib

    plugins_group = re.compile(rf"{ENTRY_POINT_GROUP}[._-]?plugins?", re.IGNORECASE)
    found = []
    for dist in metadata.distributions():
        for ep in dist.entry_points:
            group = ep.group
            if group == ENTRY_POINT_GROUP:
                continue
            squeezed = re.sub(r"[._-]", "", group.lower())
            close = difflib.SequenceMatcher(None, squeezed, ENTRY_POINT_GROUP).ratio() >= 0.85
            if plugins_group.fullmatch(group) or (close and "." not in group):
                found.append((group, ep.name, dist.metadata["Name"] or "unknown"))
    return sorted(set(found))


#: What a hook's arguments must be (facekit.hookspecs), for a plugin whose hook names others.
HOOK_ARGUMENTS = "facekit's register_* hooks take one argument named register; register_commands takes app"


def facekit_mismatch(error: BaseException, dist: metadata.Distribution | None) -> str:
    """For an ImportError of a facekit module (a name this facekit lacks, or a module it does not have): the plugin was
    made for another facekit. What to do, with the facekit range the plugin's distribution asks for, to append to the
    error; otherwise "". Where this facekit is outside that range, which way (:func:`facekit_side`): before, every
    such plugin was told "upgrade facekit, or install a release made for facekit X", the first of which cannot help a
    facekit newer than the plugin's range. For facekit's own builtins: a broken install or a bug in facekit (before:
    "facekit 0.1.0 lacks what facekit imports: upgrade facekit, or install a facekit release made for facekit
    0.1.0")."""
    module = getattr(error, "name", None) or ""
    if not isinstance(error, ImportError) or not (module == "facekit" or module.startswith("facekit.")):
        return ""
    import facekit

    if dist is not None and (getattr(dist, "name", None) or "").lower() == "facekit":  # a builtin's: facekit's own
        return _own_module_advice(module, dist)
    installed = facekit.__version__
    # (A plugin not installed as a distribution, or one whose metadata has no Name, is "the plugin": before,
    # "install a the plugin release".)
    name = getattr(dist, "name", None)
    wanted, side = "", None
    for line in (dist.requires if dist is not None and name else None) or []:
        # facekit, its extras, its versions (old metadata puts them in brackets), and a marker
        requirement = re.match(
            r"facekit(?![\w.-])\s*(?:\[[^\]]*\])?\s*\(?([^;()]*)\)?\s*(?:;(.*))?$", line.strip(), re.IGNORECASE
        )
        if dist is not None and requirement and _applies(requirement.group(2)):
            specifier = requirement.group(1).strip()
            wanted = f" ({name} {dist.version} asks for facekit {specifier or 'of any version'})"
            side = facekit_side(installed, specifier)
    release = f"a {name} release" if name else "a release of the plugin"
    if side == "older":
        advice = "upgrade facekit"
    elif side == "newer":
        advice = f"install {release} made for facekit {installed}, or a facekit it asks for"
    else:  # in the range (the plugin's lower bound is too low), or a range this cannot judge
        advice = f"upgrade facekit, or install {release} made for facekit {installed}"
    return f"; facekit {installed} lacks what {name or 'the plugin'} imports{wanted}: {advice}"


def import_advice(error: BaseException, dist: metadata.Distribution | None) -> str:
    """What to do about a plugin's ImportError, to append to it: facekit's version advice for a facekit module
    (:func:`facekit_mismatch`), otherwise what to install for the dependency (:func:`dependency_advice`)."""
    return facekit_mismatch(error, dist) or dependency_advice(error, dist)


#: Import names whose distributions are not named after them (a module not installed cannot be looked up).
_IMPORTED_AS = {
    "cv2": "opencv",
    "PIL": "pillow",
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
    "yaml": "pyyaml",
}


def dependency_advice(error: BaseException, dist: metadata.Distribution | None) -> str:
    """For an ImportError of a module other than facekit's (``import onnxruntime`` in a plugin, at its top or in a
    factory): which requirement the plugin's distribution declares for it and the ``pip install`` that gives it, to
    append to the error; otherwise "". Before, such a plugin's failure said only "No module named 'onnxruntime'",
    nothing of the package to install (``dlib`` is ``dlib-bin``, ``eos`` is ``eos-py``) or the version asked for.
    A module of the plugin's own (a broken install, or a bug in it) is to reinstall the plugin, then tell its authors:
    it was said to be a package the plugin "declares no requirement for", to upgrade."""
    module = getattr(error, "name", None) or ""
    top = module.split(".")[0]
    if not isinstance(error, ImportError) or not top or top == "facekit":
        return ""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version

    providers = metadata.packages_distributions().get(top, [])  # installed ones: the module is there, a name is not
    known = {canonicalize_name(p) for p in providers}
    stem = canonicalize_name(_IMPORTED_AS.get(top, top))
    name = getattr(dist, "name", None)
    plugin = f"{name} {dist.version}" if dist is not None and name else "the plugin"
    if dist is not None and name and canonicalize_name(name) in {*known, stem}:  # (the plugin's own: no dependency)
        return _own_module_advice(module, dist)
    headers = getattr(dist, "metadata", None) if name else None  # (getattr: a distribution without its METADATA)
    extras = (headers.get_all("Provides-Extra") if headers is not None else None) or []
    for line in (getattr(dist, "requires", None) if name else None) or []:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        wanted = canonicalize_name(requirement.name)
        if not (wanted in known or wanted == stem or wanted.startswith(f"{stem}-")):
            continue
        marker = str(requirement.marker) if requirement.marker is not None else None
        extra = next((e for e in ("", *extras) if _applies(marker, e)), None)
        if extra is None:  # asked for on another platform or Python only
            continue
        declared = line.split(";")[0].strip()  # as the plugin declares it, less its marker
        asks = f"{plugin} asks for {declared}" + (f" (with its extra {extra})" if extra else "")
        install = f"pip install '{declared}'"
        # (a wheel that records no top-level name, dlib-bin's, is found by the requirement's name)
        provider = providers[0] if providers else requirement.name
        installed = _version(provider)
        if installed is None:
            return f"; {asks}, which is not installed: {install}"
        if not providers and isinstance(error, ModuleNotFoundError):  # installed, and yet no such module
            reinstall = f"pip install --force-reinstall '{declared}'"
            return f"; {asks}, and {provider} {installed} is installed without {top}: {reinstall}"
        try:
            inside = requirement.specifier.contains(Version(installed), prereleases=True)
        except InvalidVersion:
            inside = False
        if not inside:
            return f"; {asks}, and {provider} {installed} is installed: {install}"
        release = f"a {name} release" if name else "a release of the plugin"
        return (
            f"; {asks}, and {provider} {installed} is installed, which lacks what {name or 'the plugin'} imports: "
            f"upgrade {provider}, or install {release} made for {provider} {installed}"
        )
    if providers:
        return (
            f"; {providers[0]} {_version(providers[0])} is installed, which lacks what {name or 'the plugin'} imports, "
            f"and {plugin} declares no requirement for it: upgrade {providers[0]}"
        )
    return f"; {plugin} declares no requirement for {top}: install the package that provides it"


def _own_module_advice(module: str, dist: metadata.Distribution) -> str:
    """For an ImportError of a module of ``dist``'s own (a plugin's, or facekit's for its builtins): a broken install,
    else a bug in it, never a dependency to install or a version to change."""
    return (
        f"; {module} is {dist.name} {dist.version}'s own: reinstall it (pip install --force-reinstall --no-deps "
        f"'{dist.name}=={dist.version}'), and if that does not help, it is a bug in {dist.name}: tell its authors"
    )


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except (metadata.PackageNotFoundError, ValueError):
        return None


def _applies(marker: str | None, extra: str = "") -> bool:
    """Whether a requirement with this marker (the text after its ``;``) applies to this interpreter installed without
    any of the plugin's extras (or with ``extra``), as pip judges it. Before, only ``extra`` was looked at: a facekit
    range for another Python or platform (``; python_version < "3.11"``) was quoted and judged as this one's, and one
    asked for here with or without an extra (``; extra == "x" or python_version >= "3"``) was passed over. A marker
    packaging cannot read is passed over (no range is quoted, the advice covers both ways)."""
    if marker is None or not marker.strip():
        return True
    from packaging import markers  # only once a plugin has failed to import

    try:
        return markers.Marker(marker).evaluate({"extra": extra})
    except (markers.InvalidMarker, markers.UndefinedComparison, markers.UndefinedEnvironmentName):
        return False


#: A version :func:`facekit_side` compares: a release alone (``0.1``, ``0.1.0``).
_RELEASE = re.compile(r"\d+(?:\.\d+)*")


def facekit_side(installed: str, specifier: str) -> str | None:
    """Where the version ``installed`` stands against ``specifier`` (a requirement's versions, ``>=0.1,<0.2``):
    "older" than it allows, "newer", "excluded" (``!=``), "" inside it, or None where it cannot tell (a pre-, post-,
    dev or local version, ``===``, a URL). As packaging's ``SpecifierSet.contains`` judges a release, written out
    here for the operators plugins use, since that says only whether, not which way."""
    if not _RELEASE.fullmatch(installed):
        return None
    version = tuple(map(int, installed.split(".")))
    for clause in filter(None, (part.strip() for part in specifier.split(","))):
        match = re.fullmatch(r"(~=|==|!=|<=|>=|<|>)\s*(\d+(?:\.\d+)*)(\.\*)?", clause)
        if match is None or (match[3] and match[1] not in ("==", "!=")) or (match[1] == "~=" and "." not in match[2]):
            return None
        operator, bound = match[1], tuple(map(int, match[2].split(".")))
        if match[3] or operator == "~=":  # a prefix: ==0.1.* or ~=0.1.2 (>=0.1.2 and ==0.1.*)
            prefix = bound if match[3] else bound[:-1]
            head = (version + (0,) * len(prefix))[: len(prefix)]
            low = head < prefix or (operator == "~=" and _padded(version, bound) < _padded(bound, version))
            inside = head != prefix if operator == "!=" else head == prefix and not low
        else:
            this, that = _padded(version, bound), _padded(bound, version)
            inside = {
                "==": this == that, "!=": this != that, "<": this < that, "<=": this <= that,
                ">": this > that, ">=": this >= that,
            }[operator]  # fmt: skip
            low = this <= that if operator in (">", ">=") else this < that
        if not inside:
            return "excluded" if operator == "!=" else "older" if low else "newer"
    return ""


def _padded(version: tuple[int, ...], other: tuple[int, ...]) -> tuple[int, ...]:
    """``version`` with zeros up to ``other``'s length (0.1 == 0.1.0, as PEP 440 compares releases)."""
    return version + (0,) * (len(other) - len(version))


def _load_one(ep: metadata.EntryPoint, manager: pluggy.PluginManager, state: PluginState) -> None:
    dist_name = ep.dist.name if ep.dist is not None else "unknown"
    dist_version = ep.dist.version if ep.dist is not None else "unknown"
    try:
        module = ep.load()
    except Exception as exc:
        logger.debug("plugin %s failed to import", ep.name, exc_info=True)
        error = f"{type(exc).__name__}: {exc}{import_advice(exc, ep.dist)}"
        state.failures.append(LoadFailure(ep.name, dist_name, ep.value, error))
        return
    if not isinstance(module, ModuleType) and not hasattr(module, "__dict__"):
        state.failures.append(LoadFailure(ep.name, dist_name, ep.value, "entry point is not a module or object"))
        return
    try:
        manager.register(module, name=ep.name)
    except ValueError as exc:  # pluggy: the same module or name twice
        state.failures.append(LoadFailure(ep.name, dist_name, ep.value, str(exc)))
        return
    except pluggy.PluginValidationError as exc:  # a hook whose arguments are not the spec's: def register_x(reg)
        why = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        state.failures.append(LoadFailure(ep.name, dist_name, ep.value, f"{why} ({HOOK_ARGUMENTS})"))
        return
    hooks = tuple(sorted(caller.name for caller in manager.get_hookcallers(module) or []))
    # pluggy takes only functions marked as hooks: these would be ignored in silence. Beside marked hooks, only a
    # hook's own name counts (a helper named register_* is the plugin's business); before, one hook marked and another
    # not loaded the plugin without the other's components, and without a word.
    specs = {name for name in dir(hookspecs) if name.startswith("register_")}
    undecorated = sorted(
        name
        for name in dir(module)
        if name.startswith("register_")
        and callable(getattr(module, name, None))
        and name not in hooks
        and (not hooks or name in specs)
    )
    if undecorated:
        manager.unregister(module)
        state.failures.append(
            LoadFailure(
                ep.name,
                dist_name,
                ep.value,
                f"{', '.join(undecorated)} not marked with @facekit.hookimpl, so facekit would never call "
                f"{'them' if len(undecorated) > 1 else 'it'}",
            )
        )
        return
    state.plugins.append(PluginInfo(ep.name, dist_name, dist_version, getattr(module, "__name__", ep.value), hooks))


def check_pending(manager: pluggy.PluginManager, state: PluginState | None = None) -> None:
    """A plugin that implements a hook facekit does not define (usually a misspelling) is a failure: with ``state``,
    it is unloaded and reported there like a plugin that failed to import (``facekit plugins`` and ``--help`` keep
    working); without, a :class:`PluginError`."""
    valid = ", ".join(sorted(n for n in dir(hookspecs) if n.startswith("register_")))
    while True:
        try:
            manager.check_pending()
            return
        except pluggy.PluginValidationError as exc:
            name = manager.get_name(exc.plugin) or repr(exc.plugin)
            hook = str(exc).split("unknown hook ", 1)[-1].split(" in plugin", 1)[0]
            error = f"it implements the unknown hook {hook} (valid: {valid})"
            if state is None:
                raise PluginError(f"plugin {name!r}: {error}") from exc
            manager.unregister(exc.plugin)
            info = next((p for p in state.plugins if p.name == name), None)
            if info is not None:
                state.plugins.remove(info)
            distribution = info.distribution if info is not None else "unknown"
            state.failures.append(LoadFailure(name, distribution, info.module if info is not None else name, error))


@lru_cache(maxsize=1)
def get_plugin_state() -> PluginState:
    """Load every allowed plugin once and return the manager and the load report (cached per process)."""
    manager = pluggy.PluginManager("facekit")
    manager.add_hookspecs(hookspecs)
    state = PluginState(manager)
    allow = _names_from_env("FACEKIT_PLUGINS")
    block = _names_from_env("FACEKIT_DISABLE_PLUGINS") or set()
    entry_points = _entry_points()
    # A misspelled name matches nothing: the plugin meant stays loaded (or left out) without a word otherwise.
    installed = {ep.name for ep in entry_points}
    state.installed = sorted(installed)
    for variable, names in (("FACEKIT_PLUGINS", allow or set()), ("FACEKIT_DISABLE_PLUGINS", block)):
        state.unknown_names += [(variable, name) for name in sorted(names - installed)]
    for ep in entry_points:
        by = left_out_by(ep.name, allow, block)
        if by:
            logger.debug("plugin %s left out by %s", ep.name, by)
            state.skipped.append(SkippedPlugin(ep.name, ep.dist.name if ep.dist is not None else "unknown", by))
            continue
        if manager.has_plugin(ep.name):
            first = next((p.distribution for p in state.plugins if p.name == ep.name), "unknown")
            second = ep.dist.name if ep.dist is not None else "unknown"
            if first != second:  # the same distribution seen twice on sys.path is harmless; two different ones are not
                state.failures.append(
                    LoadFailure(
                        ep.name,
                        second,
                        ep.value,
                        f"entry point name {ep.name!r} is already taken by distribution {first}; two plugins cannot "
                        f"share a name: uninstall one, or rename the entry point of {second}",
                    )
                )
            continue
        _load_one(ep, manager, state)
    check_pending(manager, state)
    return state


@contextmanager
def quiet_plugin_warnings() -> Iterator[None]:
    """Within: load and registration failures are not logged (``facekit plugins`` reports each itself)."""
    previous = logger.level, logging.getLogger("facekit.registry").level
    logger.setLevel(logging.ERROR)
    logging.getLogger("facekit.registry").setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous[0])
        logging.getLogger("facekit.registry").setLevel(previous[1])


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, without the plugins that failed to load: each of those is a warning (once per
    process) naming its distribution and how to disable it, is listed by ``facekit plugins`` and in the message for a
    component that is not found; the other plugins and every command keep working."""
    state = get_plugin_state()
    if not state.warned:
        state.warned = True
        for failure in state.failures:
            logger.warning("%s", failure.message())
    return state.manager


def reset() -> None:
    """Forget loaded plugins and registries (tests, or after installing a plugin in a running process)."""
    get_plugin_state.cache_clear()
    from facekit import registry

    registry.get_registries.cache_clear()
