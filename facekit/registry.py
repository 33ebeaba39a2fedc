"""Registries: five name -> :class:`ComponentSpec` maps, built from the plugin hooks.

A registry is a value computed from the plugin manager (cached per process), never a global filled by import side
effects. Each plugin's hook is called on its own with a ``register`` callback that knows the plugin's name, so a
duplicate name is an error naming both plugins: the name is unusable (asking for it raises that error, and `facekit
plugins` reports it), while every other component, the two plugins' others included, keeps working.
"""

from __future__ import annotations

import importlib.metadata as metadata
import inspect
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError, PydanticSerializationError

from facekit.errors import (
    ENVIRONMENT_ERRNOS,
    ComponentNotFoundError,
    DuplicateComponentError,
    FacekitError,
    InvalidComponentSpec,
    ParamsError,
    PluginError,
    Problem,
    did_you_mean,
)
from facekit.types import (
    DEVICE_PATTERN,
    KINDS,
    PROTOCOLS,
    Kind,
    LandmarkScheme,
    ModelCard,
    alignment_gap,
    call_mismatches,
    missing_members,
)

if TYPE_CHECKING:
    from facekit.plugins import SkippedPlugin

logger = logging.getLogger(__name__)
#: Plugins whose registration hook raised (their components are left out); `facekit plugins` reports them.
HOOK_FAILURES: list[str] = []

T = TypeVar("T")

#: The kinds whose components must carry a ModelCard, and what the pipeline reads from it.
CARD_KINDS: dict[str, str] = {
    "encoder": "its input size, alignment template, feature size and threshold",
    "detector": "its landmark scheme",
}

#: What a component may be called: it is typed in recipes and on the command line.
COMPONENT_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")

HOOK_FOR_KIND: dict[Kind, str] = {
    "detector": "register_detectors",
    "encoder": "register_encoders",
    "decoder": "register_decoders",
    "warper": "register_warpers",
    "app": "register_apps",
}


def no_boolean_for_number(annotation: Any, value: Any) -> Any:
    """``value`` for a field of type ``annotation``, refused where it is ``true``/``false`` and the field a number (a
    ``field_validator("*", mode="before")`` of :class:`Params` and the recipe's sections; pydantic reads them as 1 and
    0). The refusal is a field's own error, so it is said at the field's path like any other refused value
    (helper-147: a model-wide check said "train: lr: expected a number, got true", without the --set that gave it)."""
    kinds = {annotation} | set(get_args(annotation))
    if isinstance(value, bool) and {int, float} & kinds:
        expected = _KIND_WORDS["int_type"] if float not in kinds else _KIND_WORDS["float_type"]
        raise PydanticCustomError("bool_for_number", "must be {expected}", {"expected": expected})
    return value


def setting_error(message: str, fields: Sequence[str], about: Sequence[str] = ()) -> PydanticCustomError:
    """A cross-field rule's refusal (a ``model_validator``'s), said of the settings it refuses: ``fields``, dotted
    within the model (``loss.separation_margin``), each a problem of its own at its path, whose ``message`` follows
    the path (``train.background_rgb shapes the plain background: ...``); ``about``: the settings the rule reads
    besides them (``background``), so that a problem is labelled with the ``--set`` that gave any of them
    (:func:`problems_from_validation`, :class:`Problem`). helper-150: a model validator's ValueError was said at the
    section (``train: train.background_rgb shape ...``), never with the ``--set`` that gave the value."""
    shown = ", ".join(fields)
    context = {"fields": tuple(fields), "about": tuple(about), "message": message, "shown": shown}
    return PydanticCustomError("setting", "{shown} {message}", context)


def as_mapping(params: Any) -> Mapping[str, Any]:
    """Settings as a mapping: a mapping as it is, a pydantic model's fields, nothing as ``{}``."""
    if params is None:
        return {}
    return params if isinstance(params, Mapping) else dict(params)


class Params(BaseModel):
    """Base class for a component's parameters: typed, described fields; unknown keys are errors, numbers must be
    finite and ``true``/``false`` is never read as a number (as in the recipe's own sections)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    #: An app's params that its ``apply`` (what a recipe's infer stage calls, on the faces the recipe's model made)
    #: does not read: set in a recipe, they are refused before any stage runs rather than left unused.
    NOT_IN_PIPELINE: ClassVar[tuple[str, ...]] = ()

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_for_number(cls, value: Any, info: ValidationInfo) -> Any:
        return no_boolean_for_number(cls.model_fields[str(info.field_name)].annotation, value)

    @classmethod
    def checked(cls, values: Mapping[str, Any], component: str) -> Self:
        """``values`` validated into this model, or a :class:`ParamsError` naming ``component`` with every problem:
        how ``load_component`` checks a component's settings, for a component's constructor called directly (to
        share a normalizer, in a test) so that it refuses what a recipe refuses, in the same words."""
        try:
            return cls.model_validate(dict(values))
        except ValidationError as exc:
            raise ParamsError(problems_from_validation(exc, fields=list(cls.model_fields)), component) from None


class NoParams(Params):
    """For components without parameters."""


@dataclass(frozen=True)
class ComponentSpec(Generic[T]):
    """How to build one component: ``factory(params)`` returns it, ``params`` validates its settings.

    ``plugin`` is filled in by the host from the plugin whose hook registered the spec.
    """

    name: str
    factory: Callable[[Any], T]
    params: type[Params] = NoParams
    summary: str = ""
    card: ModelCard | None = None
    plugin: str = ""

    def validate_params(self, values: Mapping[str, Any]) -> Params:
        """Validate ``values`` into this component's ``Params``; raises :class:`ParamsError` with every problem."""
        return self.params.checked(values, f"{self.name} params")

    def build(self, params: Params | Mapping[str, Any] | None = None, *, kind: str = "", asked_for: str = "") -> T:
        """Validate ``params`` (unless already this spec's own model) and call the factory. A module the factory
        imports that is missing (or lacks a name) is a :class:`PluginError` saying which component needed it, where
        it was ``asked_for`` (``components.encoder``), and what to install; ``kind`` names the component's kind in it
        (looked up in the registries when not given)."""
        if not isinstance(params, self.params):
            params = self.validate_params(as_mapping(params))
        token = _BUILDING.set((*_BUILDING.get(), self))
        try:
            return _marked(self.factory(params), self, kind, params)
        except ImportError as error:  # heavy imports happen in factories (ARCHITECTURE.md): onnxruntime, dlib, eos
            raise PluginError(not_built_message(self, error, kind, asked_for)) from error
        except ComponentNotFoundError as error:  # one it builds on (a wrapper's load_component), not this one
            naming = _naming(self, kind, asked_for)
            raise ComponentNotFoundError(f"{naming} builds on another not available here: {error}") from error
        except (FacekitError, MemoryError):  # said in facekit's words already (a weight file not found, ...)
            raise
        except Exception as error:  # a plugin's own error: before, its traceback, which named neither component nor fix
            if _out_of_memory(error) or _the_machines(error):
                raise
            raise PluginError(raised_in_build_message(self, error, kind, asked_for)) from error
        finally:
            _BUILDING.reset(token)


#: The attribute a built component carries its :class:`BuiltAs` in (:func:`built_as`).
BUILT_AS = "_facekit_built_as"


@dataclass(frozen=True)
class BuiltAs:
    """What a registry built a component as: its kind (``""`` where the builder did not say), registered name,
    plugin and params (as JSON values). A component does not know its spec; this lets messages name it as a user
    asked for it (``detector 'mine' (plugin 'p')``, not its class) and output records say which detector found a
    face."""

    kind: str
    name: str
    plugin: str
    params: dict[str, Any]

    def label(self, kind: str = "") -> str:
        """``detector 'mine' (plugin 'p')``: the component in a message (``kind`` where this does not know it)."""
        plugin = f" (plugin {self.plugin!r})" if self.plugin else ""
        return f"{kind or self.kind or 'component'} {self.name!r}{plugin}"


def _marked(component: T, spec: ComponentSpec[Any], kind: str, params: Params) -> T:
    """``component`` with its :class:`BuiltAs` attached (in its ``__dict__``, not through its own ``__setattr__``):
    one that takes no attributes (slots, a builtin) goes without, and is named by its class."""
    try:
        values = params.model_dump(mode="json")
    except PydanticSerializationError:  # a field of a type JSON cannot hold: its text, for records to compare
        values = {key: repr(value) for key, value in params.model_dump().items()}
    built = BuiltAs(kind, spec.name, spec.plugin, values)
    try:
        object.__setattr__(component, BUILT_AS, built)
    except (AttributeError, TypeError):
        pass
    return component


def built_as(component: Any) -> BuiltAs | None:
    """What a registry built ``component`` as (:class:`BuiltAs`), or None for one made otherwise (by hand, in a
    test). Read from its own ``__dict__``: a wrapper that forwards unknown attributes to the component inside it
    is not taken for that one."""
    try:
        found = vars(component).get(BUILT_AS)
    except TypeError:  # no __dict__
        return None
    return found if isinstance(found, BuiltAs) else None


def component_label(component: Any, kind: str) -> str:
    """How a message names ``component`` of ``kind``: by the name and plugin it was built from (``detector 'mine'
    (plugin 'p')``), or by its class (``detector MyDetector``) when no registry built it."""
    built = built_as(component)
    return built.label(kind) if built is not None else f"{kind} {type(component).__name__}"


#: The specs whose factories are running in this context, outermost first: a wrapper's ``load_component`` of a
#: component not available here is not told "did you mean" the wrapper itself ('dlib-resnet' asked for by
#: 'dlib-resnet-grey' suggested 'dlib-resnet-grey').
_BUILDING: ContextVar[tuple[ComponentSpec[Any], ...]] = ContextVar("facekit_building", default=())


def not_built_message(spec: ComponentSpec[Any], error: ImportError, kind: str = "", asked_for: str = "") -> str:
    """One line for a component whose factory failed to import a module: before, the ImportError's traceback, which
    named neither the component nor the package to install (its plugin had loaded, so ``facekit plugins`` showed it
    fine)."""
    from facekit.plugins import import_advice

    advice = import_advice(error, _distribution(spec.plugin) if spec.plugin else None)
    return f"{_naming(spec, kind, asked_for)} could not be built: {type(error).__name__}: {error}{advice}"


def raised_in_build_message(spec: ComponentSpec[Any], error: Exception, kind: str = "", asked_for: str = "") -> str:
    """One line for a component whose factory raised (an error of the plugin's own, not facekit's): which component,
    where it was asked for, what it raised, and whose it is to fix. Before, the error's traceback, ending in the
    plugin's code: neither the component nor the plugin (nor a way to leave it out) was named."""
    message = " ".join(str(error).split()) or "(no message)"
    said = f"{_naming(spec, kind, asked_for)} could not be built: {type(error).__name__}: {message}"
    if spec.plugin in ("", "builtin"):
        whose = "a bug in facekit unless a setting caused it: check its params, else tell facekit's authors"
    else:
        dist = _distribution(spec.plugin)
        source = f" ({dist.name} {dist.version})" if dist is not None else ""
        whose = (
            f"check its params, else it is a bug in plugin {spec.plugin!r}{source}: tell its authors, or leave it "
            f"out with FACEKIT_DISABLE_PLUGINS={spec.plugin}"
        )
    return f"{said} (FACEKIT_DEBUG=1 for the traceback); {whose}"


def _out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is running out of memory (torch's ``OutOfMemoryError``, or a message that says so), which is
    the machine's, not a plugin's: raised as it is (:func:`facekit.normalize._out_of_memory`)."""
    from facekit.normalize import _out_of_memory as out_of_memory

    return out_of_memory(error)


def _the_machines(error: BaseException) -> bool:
    """Whether ``error`` is the machine's or the user's paths (a full disk, a weight file one may not read:
    :data:`facekit.errors.ENVIRONMENT_ERRNOS`), which the CLI says in one line with what to do, not a plugin's bug."""
    return isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRNOS


def _naming(spec: ComponentSpec[Any], kind: str = "", asked_for: str = "") -> str:
    """``warper 'name' (plugin 'p', asked for at components.warper)``: a component in a message about building it."""
    kind = kind or next((k for k, r in get_registries().items() if r._specs.get(spec.name) is spec), "component")
    about = ", ".join(
        ([f"plugin {spec.plugin!r}"] if spec.plugin else []) + ([f"asked for at {asked_for}"] if asked_for else [])
    )
    return f"{kind} {spec.name!r}{f' ({about})' if about else ''}"


def problems_from_validation(exc: ValidationError, prefix: str = "", fields: Sequence[str] = ()) -> list[Problem]:
    """Turn pydantic errors into :class:`Problem` records with dotted paths under ``prefix``, in our words (what the
    value must be, and the value given: :func:`_refused_value`); an unknown key among ``fields`` (the model's own)
    names the nearest one when one is close ('regularisation': did you mean 'regularization'?)."""
    problems = []
    errors = exc.errors()
    # A list of fixed length given too few items (train.background_rgb: [1, 2]): pydantic says "Field required" of
    # each missing place; said once, of the list, with the length it must have.
    short: dict[tuple[Any, ...], int] = {}
    for err in errors:
        if err["type"] == "missing" and err["loc"] and isinstance(last := err["loc"][-1], int):
            short[err["loc"][:-1]] = max(short.get(err["loc"][:-1], 0), last + 1)
    for err in errors:
        loc = err["loc"]
        place = loc[-1] if loc else None
        if err["type"] == "setting":  # (setting_error: a cross-field rule's, at the paths of what it refuses)
            context = err["ctx"]
            at = ".".join(p for p in (prefix, *(str(part) for part in loc)) if p)
            about = tuple(f"{at}.{name}" if at else name for name in context["about"])
            for name in context["fields"]:
                problems.append(Problem(f"{at}.{name}" if at else name, context["message"], about))
            continue
        message = err["msg"]
        if err["type"] == "value_error":  # a validator's own words, without pydantic's "Value error, " before them
            message = message.removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "extra field not permitted"
            hint = did_you_mean(str(err["loc"][-1]), fields, cutoff=0.7) if len(err["loc"]) == 1 else ""
            message += f"; {hint}" if hint else ""
        elif err["type"] == "missing" and isinstance(place, int) and loc[:-1] in short:
            if short[loc[:-1]] != place + 1:  # (said once, at the last missing place)
                continue
            loc = loc[:-1]
            message = f"must have {short[loc]} items (got {len(err['input'])})"
        elif err["type"] == "missing":
            message = "must be given"
        elif err["type"] != "value_error":  # (a validator's words name the value it refuses)
            message = _refused_value(err["type"], err.get("ctx") or {}, message, err["input"])
        path = ".".join(p for p in (prefix, ".".join(str(part) for part in loc)) if p)
        problems.append(Problem(path, message))
    return problems


#: pydantic's words for a value of the wrong kind, said plainly (``Input should be a valid integer, unable to parse
#: string as an integer`` is "must be a whole number").
_KIND_WORDS = {
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "finite_number": "a finite number",
    "string_type": "text",
    "list_type": "a list, written [A, B]",
    "tuple_type": "a list, written [A, B]",
    "dict_type": "a mapping, written {KEY: VALUE}",
    "model_type": "a mapping, written {KEY: VALUE}",
    "model_attributes_type": "a mapping, written {KEY: VALUE}",
}
_BOUND_WORDS = {"greater_than": "greater than", "greater_than_equal": "at least", "less_than": "less than"}
_BOUND_WORDS |= {"less_than_equal": "at most", "multiple_of": "a multiple of"}  # (scrfd's input_size)
#: The patterns fields are checked against, in words (pydantic says "String should match pattern '^(cpu|...'").
_PATTERN_WORDS = {
    DEVICE_PATTERN: "a device: cpu, cuda, cuda:N, mps, xpu or auto",
    r"^[0-9a-f]{64}$": "a SHA-256 checksum: 64 hexadecimal digits, 0-9 and a-f",  # (the weights' sha256 params)
}


def _refused_value(kind: str, context: Mapping[str, Any], message: str, given: Any) -> str:
    """A value pydantic refused, in our words and with the value as given (helper-144: `--set train.steps=abc` said
    "Input should be a valid integer" without the value, which a long command line or an ``extends`` chain leaves to
    guess): "must be a whole number (got 'abc')"; text, a list or a mapping where another belongs, a device, a
    list's length too (helper-147: `--set infer.output=` said "Input should be a valid string"). A section or list
    given where a value belongs is not echoed; a value left empty (YAML's null) is said to be empty."""
    if kind in _KIND_WORDS:
        message = f"must be {_KIND_WORDS[kind]}"
    elif kind == "bool_for_number":
        message = f"must be {context['expected']}"
    elif kind in _BOUND_WORDS:
        bound = next(iter(context.values()), None)
        shown_bound = f"{bound:g}" if isinstance(bound, float) else bound  # (gt=0 on a float field is 0.0)
        message = f"must be {_BOUND_WORDS[kind]} {shown_bound}" if bound is not None else message
    elif kind == "literal_error" and "expected" in context:
        message = f"must be {context['expected']}"
    elif kind == "string_pattern_mismatch":
        pattern = str(context.get("pattern", ""))
        message = f"must be {_PATTERN_WORDS.get(pattern, f'text matching {pattern}')}"
    elif kind == "too_long" and "max_length" in context:
        message = f"must have at most {context['max_length']} items (got {context.get('actual_length')})"
    elif kind == "too_short" and "min_length" in context:
        message = f"must have at least {context['min_length']} items (got {context.get('actual_length')})"
    if given is None:
        return f"{message}, not empty"
    shown = refused_echo(given)
    return f"{message} (got {shown})" if shown is not None else message


def refused_echo(given: Any) -> str | None:
    """How a refused value is shown in a problem's ``(got ...)``: a scalar in YAML's words (``true``, ``16``,
    ``'abc'``), cut at 60 characters; None for a section or list, which is not echoed."""
    if not isinstance(given, (str, int, float, bool)):
        return None
    return echo_cut(json.dumps(given) if isinstance(given, bool) else repr(given))


def echo_cut(written: str) -> str:
    """``written`` as a problem echoes it: at most 60 characters."""
    return written if len(written) <= 60 else f"{written[:57]}..."


class Registry(Generic[T]):
    """The components of one kind, by name."""

    def __init__(self, kind: Kind, load_failures: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._specs: dict[str, ComponentSpec[T]] = {}
        # Names two or more plugins registered: none of them is used (which one a recipe meant is unknowable).
        self._conflicts: dict[str, list[ComponentSpec[T]]] = {}
        self._load_failures = load_failures
        self._skipped: tuple[SkippedPlugin, ...] = ()

    def add(self, spec: ComponentSpec[T]) -> None:
        """Add ``spec``; a name already taken is a :class:`DuplicateComponentError` naming both plugins, and from then
        on the name is unusable: :meth:`get` raises the same error (until :meth:`drop_plugin` leaves one)."""
        if not isinstance(spec, ComponentSpec):
            raise TypeError(f"register() takes a facekit.ComponentSpec, got {type(spec).__name__}")
        if not isinstance(spec.name, str) or not COMPONENT_NAME.fullmatch(spec.name):
            raise InvalidComponentSpec(
                f"{self.kind} name {spec.name!r}: use lower-case letters, digits, '-', '_' or '.', starting with a "
                "letter or digit (it is typed in recipes and on the command line)"
            )
        if isinstance(spec.params, BaseModel):  # params=MyParams() for params=MyParams
            raise InvalidComponentSpec(
                f"{self.kind} {spec.name!r}: params is an instance of {type(spec.params).__name__}, not the class: "
                f"register params={type(spec.params).__name__} (facekit validates each recipe's settings into it)"
            )
        if not (isinstance(spec.params, type) and issubclass(spec.params, BaseModel)):
            raise InvalidComponentSpec(
                f"{self.kind} {spec.name!r}: params is {spec.params!r}, not a pydantic model: use a subclass of "
                "facekit.Params (facekit validates recipe settings with it; facekit.NoParams for a component without "
                "settings)"
            )
        if spec.params.model_config.get("extra") != "forbid":
            raise InvalidComponentSpec(
                f"{self.kind} {spec.name!r}: params {spec.params.__name__} takes unknown keys, so a misspelled setting "
                "in a recipe would be ignored: subclass facekit.Params (or set model_config extra='forbid')"
            )
        self._check_factory(spec)
        if spec.card is None and self.kind in CARD_KINDS:
            raise InvalidComponentSpec(
                f"{self.kind} {spec.name!r} has no model card: register it with ComponentSpec(card=ModelCard(...)); "
                f"the pipeline reads {CARD_KINDS[self.kind]} from it"
            )
        scheme = spec.card.landmark_scheme if spec.card is not None else None
        if scheme is not None:
            try:
                LandmarkScheme.parse(scheme, f"{self.kind} {spec.name!r}")  # a ValueError listing the known schemes
            except ValueError as error:
                raise InvalidComponentSpec(str(error)) from None
        existing = self._specs.pop(spec.name, None)
        if existing is not None or spec.name in self._conflicts:
            claims = self._conflicts.setdefault(spec.name, [] if existing is None else [existing])
            claims.append(spec)
            raise DuplicateComponentError(self.conflict_message(spec.name))
        self._specs[spec.name] = spec

    def _check_factory(self, spec: ComponentSpec[T]) -> None:
        """A factory facekit cannot call as ``factory(params)`` is refused here, naming it: before (helper-98), a
        warper class whose ``__init__`` took no params registered and listed fine, and the train stage that built it
        ended in a TypeError traceback."""
        factory = spec.factory
        what = getattr(factory, "__qualname__", None) or type(factory).__name__
        if not callable(factory):
            raise InvalidComponentSpec(f"{self.kind} {spec.name!r}: factory {factory!r} is not callable")
        try:
            signature = inspect.signature(factory).replace(return_annotation=inspect.Signature.empty)
            signature.bind(None)
        except TypeError:
            raise InvalidComponentSpec(
                f"{self.kind} {spec.name!r}: factory {what}{signature} cannot be called with the "
                f"params alone: facekit builds a component as factory(params), params a {spec.params.__name__} "
                "(for a class: def __init__(self, params))"
            ) from None
        except ValueError:  # no signature to read (a builtin): it is called as it is
            pass
        if isinstance(factory, type):  # a class: its methods can be read before anything is built
            mismatched = call_mismatches(factory, self.kind)
            if mismatched:
                raise InvalidComponentSpec(mismatch_message(self.kind, spec, mismatched, plugin=False))

    def conflicts(self) -> list[str]:
        """The names two or more registrations claim (unusable)."""
        return sorted(self._conflicts)

    def conflict_message(self, name: str) -> str:
        claims = [spec.plugin for spec in self._conflicts[name]]
        plugins = [repr(plugin) for plugin in dict.fromkeys(claims)]
        if len(plugins) == 1:
            return f"plugin {plugins[0]} registers {self.kind} {name!r} {len(claims)} times: register it once"
        if len(plugins) == 2:
            first, second = dict.fromkeys(claims)
            if "builtin" in (first, second):  # disabling builtin would take every one of facekit's own components
                other = second if first == "builtin" else first
                return (
                    f"{self.kind} {name!r} is registered by two plugins: {plugins[0]} and {plugins[1]}; the name is "
                    f"facekit's own: rename the component in plugin {other!r}, or uninstall that plugin or set "
                    f"FACEKIT_DISABLE_PLUGINS={other}"
                )
            return (
                f"{self.kind} {name!r} is registered by two plugins: {plugins[0]} and {plugins[1]}; uninstall one, or "
                f"disable it with FACEKIT_DISABLE_PLUGINS={first} (or ={second})"
            )
        return (
            f"{self.kind} {name!r} is registered by {len(plugins)} plugins: {', '.join(plugins[:-1])} and "
            f"{plugins[-1]}; uninstall all but one, or disable the others with FACEKIT_DISABLE_PLUGINS"
        )

    def drop_plugin(self, plugin: str) -> None:
        """Forget every component ``plugin`` registered (its registration hook failed half-way); a name it shared
        with one other plugin becomes that plugin's again."""
        self._specs = {name: spec for name, spec in self._specs.items() if spec.plugin != plugin}
        for name, claims in list(self._conflicts.items()):
            kept = [spec for spec in claims if spec.plugin != plugin]
            if len(kept) > 1:
                self._conflicts[name] = kept
            else:
                del self._conflicts[name]
                if kept:
                    self._specs[name] = kept[0]

    def set_load_failures(self, failures: tuple[str, ...], skipped: tuple[SkippedPlugin, ...] = ()) -> None:
        """What failed while plugins loaded and registered, and the plugins the environment left out (both shown when
        a component is not found)."""
        self._load_failures = failures
        self._skipped = skipped

    def get(self, name: str) -> ComponentSpec[T]:
        """The spec called ``name``; a miss lists close names and any plugins that failed to load, a name two plugins
        registered is a :class:`DuplicateComponentError` naming them."""
        if name in self._conflicts:
            raise DuplicateComponentError(self.conflict_message(name))
        try:
            return self._specs[name]
        except KeyError:
            raise ComponentNotFoundError(self.not_found_message(name)) from None

    def not_found_message(self, name: str) -> str:
        building = _BUILDING.get()
        # Not the component whose factory asked (a wrapper named after the one it wraps is always close to it).
        offered = [n for n, spec in self._specs.items() if not any(spec is asking for asking in building)]
        close = did_you_mean(name, [*offered, *self._conflicts], n=3, cutoff=0.5)
        parts = [f"unknown {self.kind} {name!r}"]
        provider = FIRST_PARTY_PROVIDERS.get((self.kind, name))
        skipped = {plugin.distribution: plugin for plugin in self._skipped}
        if provider is not None and provider in skipped:
            parts.append(
                f"it is provided by the distribution {provider}, installed but left out by {skipped[provider].by} "
                f"(plugin {skipped[provider].name!r})"
            )
        elif provider is not None:
            parts.append(f"it is provided by the distribution {provider}: pip install {provider}")
        if close:
            parts.append(close)
        parts.append("known: " + (", ".join(sorted(self._specs)) or "none"))
        if self._load_failures:
            parts.append("plugins that failed to load: " + "; ".join(self._load_failures))
        if self._skipped and (provider is None or provider not in skipped):
            left = ", ".join(f"{plugin.name} ({plugin.distribution}, by {plugin.by})" for plugin in self._skipped)
            parts.append(f"plugins left out: {left}")
        return "; ".join(parts)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[ComponentSpec[T]]:
        return iter(sorted(self._specs.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        return len(self._specs)

    def names(self) -> list[str]:
        return sorted(self._specs)


#: Which first-party distribution provides each of its components, so that a missing one is named in the error
#: (an installed plugin registers itself; this only covers those not installed). A test keeps it in step with what
#: the plugins under plugins/ register.
FIRST_PARTY_PROVIDERS: dict[tuple[str, str], str] = {
    ("detector", "dlib"): "facekit-dlib",
    ("detector", "dlib-5pt"): "facekit-dlib",
    ("encoder", "dlib-resnet"): "facekit-dlib",
    ("encoder", "facenet"): "facekit-facenet",
    ("detector", "scrfd"): "facekit-insightface",
    ("encoder", "arcface"): "facekit-insightface",
    ("encoder", "arcface-onnx"): "facekit-insightface",
    ("detector", "yunet"): "facekit-opencv",
    ("encoder", "sface"): "facekit-opencv",
    ("encoder", "vggface"): "facekit-vggface",
    ("app", "avatar"): "facekit-avatar",
}


class _Registries:
    """``get_registries()``: all five registries, built once per process (``cache_clear()`` forgets them) by loading
    the plugins and calling each one's hooks. Threads asking at once wait for one build. A plugin that asks for a
    registry while they are built (at import or in a register_* hook) gets an error, so that plugin alone is left out
    (before, the nested build recursed until RecursionError, charged to whichever hooks were on the stack)."""

    def __init__(self) -> None:
        self._built: dict[Kind, Registry[Any]] | None = None
        self._lock = threading.Lock()
        self._building = threading.local()  # this thread is inside the build (a plugin asking again re-enters)

    def __call__(self) -> dict[Kind, Registry[Any]]:
        if getattr(self._building, "active", False):
            raise FacekitError(
                "a plugin asked for facekit's registries (get_registry, load_component) while they are being built "
                "(at its import or in its register_* hook): look other components up when yours is built (in its "
                "factory), not when it is loaded or registered"
            )
        with self._lock:
            if self._built is None:
                self._building.active = True
                try:
                    self._built = _build_registries()
                finally:
                    self._building.active = False
            return self._built

    def cache_clear(self) -> None:
        with self._lock:
            self._built = None

    def _after_fork_in_child(self) -> None:
        """A forked child gets a new lock: one held at the fork by another of the parent's threads (building the
        registries) would stay held in the child, where that thread does not exist."""
        self._lock = threading.Lock()


get_registries = _Registries()
if hasattr(os, "register_at_fork"):  # (POSIX's: Windows' os has none, and no fork to mend)
    os.register_at_fork(after_in_child=get_registries._after_fork_in_child)


def _distribution(plugin: str) -> metadata.Distribution | None:
    """The installed distribution of the loaded plugin named ``plugin`` (None for one that is not installed, or whose
    distribution has no name: metadata's ValueError, which escaped a failed hook's report and ended every command)."""
    from facekit.plugins import get_plugin_state

    info = next((p for p in get_plugin_state().plugins if p.name == plugin), None)
    try:
        return metadata.distribution(info.distribution) if info is not None else None
    except (metadata.PackageNotFoundError, ValueError):
        return None


def _build_registries() -> dict[Kind, Registry[Any]]:
    from facekit.plugins import get_plugin_manager, get_plugin_state, import_advice

    manager = get_plugin_manager()
    failures = [f.message() for f in get_plugin_state().failures]
    HOOK_FAILURES.clear()  # this build's failures only: a rebuild after plugins.reset() lists each once
    registries: dict[Kind, Registry[Any]] = {kind: Registry(kind) for kind in KINDS}

    def report(message: str, load_failure: bool = True) -> None:  # shown once, listed by `facekit plugins`
        logger.warning("%s", message)
        HOOK_FAILURES.append(message)
        if load_failure:  # also named when a component is not found
            failures.append(message)

    for kind, hook_name in HOOK_FOR_KIND.items():
        registry = registries[kind]
        for impl in getattr(manager.hook, hook_name).get_hookimpls():

            def register(
                spec: ComponentSpec[Any],
                _plugin: str = impl.plugin_name,
                _reg: Registry[Any] = registry,
                _kind: Kind = kind,
            ) -> None:
                if isinstance(spec, ComponentSpec):
                    spec = ComponentSpec(**{**spec.__dict__, "plugin": _plugin})
                try:
                    _reg.add(spec)
                except InvalidComponentSpec as error:  # that component is left out; the plugin's others stay
                    report(f"plugin {_plugin!r} registers an unusable {_kind}, left out: {error}")
                except DuplicateComponentError:  # that name is unusable (reported once the hooks have run)
                    pass

            try:
                impl.function(register=register)
            except Exception as error:  # noqa: BLE001  (a broken plugin: its components are left out, the rest work)
                registry.drop_plugin(impl.plugin_name)
                mismatch = import_advice(error, _distribution(impl.plugin_name))
                report(
                    f"plugin {impl.plugin_name!r} failed in {hook_name}: {type(error).__name__}: {error}{mismatch}. "
                    f"Fix or uninstall it, or set FACEKIT_DISABLE_PLUGINS={impl.plugin_name} to skip it"
                )
    for registry in registries.values():  # the clashes left once every hook ran (a failed plugin gave its up)
        for name in registry.conflicts():
            report(f"{registry.conflict_message(name)} (asking for it is an error until then)", load_failure=False)
    skipped = tuple(get_plugin_state().skipped)
    for registry in registries.values():
        registry.set_load_failures(tuple(failures), skipped)
    return registries


def get_registry(kind: Kind) -> Registry[Any]:
    """The registry of ``kind`` (``detector``, ``encoder``, ``decoder``, ``warper`` or ``app``)."""
    if kind not in HOOK_FOR_KIND:
        raise ComponentNotFoundError(f"unknown component kind {kind!r}; kinds: {', '.join(KINDS)}")
    return get_registries()[kind]


def load_component(kind: Kind, name: str, **params: Any) -> Any:
    """Build the ``kind`` component registered as ``name`` with ``params`` (validated by its ``Params``)."""
    return build_checked(kind, get_registry(kind).get(name), params)


def build_checked(
    kind: Kind, spec: ComponentSpec[T], params: Params | Mapping[str, Any] | None = None, asked_for: str = ""
) -> T:
    """``spec.build(params)`` (``asked_for``: where, for its message when a module it imports is missing), refused
    with a :class:`FacekitError` when the built component lacks a member of its kind's protocol (before: an
    AttributeError traceback where the pipeline first read it), or when a method of it cannot be called as the
    pipeline calls it (before: a warper with another ``warp`` signature registered, built and passed the recipe
    check, and training ended in a TypeError traceback from inside the decoder)."""
    component = spec.build(params, kind=kind, asked_for=asked_for)
    whose = f" (plugin {spec.plugin!r})" if spec.plugin else ""
    missing = missing_members(component, kind)
    if missing:  # before: an AttributeError traceback wherever the pipeline first read one ('AWarper' has no 'card')
        protocol = PROTOCOLS[kind].__name__
        raise FacekitError(
            f"{kind} {spec.name!r}{whose} lacks {', '.join(missing)}, which the pipeline reads from every {kind} "
            f"(facekit.types.{protocol}): add them, or register it as the kind it is"
        )
    mismatched = call_mismatches(component, kind)
    if mismatched:
        raise FacekitError(mismatch_message(kind, spec, mismatched))
    gap = alignment_gap(component, f"encoder {spec.name!r}{whose}") if kind == "encoder" else None
    if gap:
        raise FacekitError(gap)
    return component


def mismatch_message(kind: Kind, spec: ComponentSpec[Any], mismatched: list[str], plugin: bool = True) -> str:
    protocol = PROTOCOLS[kind]
    calls = [
        f"{name}({', '.join(list(inspect.signature(member).parameters)[1:])})"
        for name, member in vars(protocol).items()
        if not name.startswith("_") and inspect.isfunction(member)
    ]
    whose = f" (plugin {spec.plugin!r})" if plugin and spec.plugin else ""
    return (
        f"{kind} {spec.name!r}{whose}: {', '.join(mismatched)} cannot be called as the pipeline calls it, "
        f"{' and '.join(calls)} (facekit.types.{protocol.__name__})"
    )


def list_components(kind: Kind | None = None) -> list[ComponentSpec[Any]]:
    """Every registered spec of ``kind`` (or of every kind), sorted by kind then name."""
    kinds = [kind] if kind is not None else list(KINDS)
    return [spec for k in kinds for spec in get_registry(k)]
