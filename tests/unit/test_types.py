"""facekit.types.RebuiltOnUnpickle: components with native handles go to spawned workers and deep copies."""

from __future__ import annotations

import copy
import pickle
import threading
from typing import Any

import pytest
import torch

from facekit.types import RebuiltOnUnpickle


class Handled(RebuiltOnUnpickle):
    """A component whose lock (which cannot be pickled) stands for a native handle made from its settings."""

    _REBUILT = ("_lock", "_made_for")

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.inits = 1
        self._rebuild()

    def _rebuild(self) -> None:
        self._lock = threading.Lock()
        self._made_for = self.threshold


class MoreHandled(Handled):
    """A subclass with an ``__init__`` of its own, its own attributes and a handle of its own."""

    _REBUILT = (*Handled._REBUILT, "_event")

    def __init__(self, threshold: float, extra: int) -> None:
        super().__init__(threshold)
        self.extra = extra

    def _rebuild(self) -> None:
        super()._rebuild()
        self._event = threading.Event()


class Unsaid(RebuiltOnUnpickle):
    _REBUILT = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()


def _copies(component: Any) -> list[Any]:
    return [pickle.loads(pickle.dumps(component)), copy.deepcopy(component)]


def test_a_component_with_native_handles_pickles_and_makes_them_again() -> None:
    with pytest.raises(TypeError, match="cannot pickle"):  # what the mixin is for
        pickle.dumps(threading.Lock())
    original = Handled(0.5)
    original.threshold = 0.7  # set after construction: the copy keeps it and rebuilds from it
    for twin in _copies(original):
        assert type(twin) is Handled and twin.threshold == 0.7 and twin.inits == 1
        assert isinstance(twin._lock, type(original._lock)) and twin._lock is not original._lock
        assert twin._made_for == 0.7  # made from the restored settings, not carried over


def test_a_subclass_keeps_its_attributes_and_adds_handles_without_its_init_running() -> None:
    original = MoreHandled(0.5, extra=3)
    original.scale = 2  # an attribute no __init__ sets
    assert "_event" not in original.__getstate__() and "_lock" not in original.__getstate__()
    for twin in _copies(original):
        assert (twin.threshold, twin.extra, twin.scale, twin.inits) == (0.5, 3, 2, 1)
        assert twin._event is not original._event and twin._lock is not original._lock


def test_handles_named_without_a_rebuild_are_an_error_naming_the_class() -> None:
    state = pickle.dumps(Unsaid())
    with pytest.raises(NotImplementedError, match=r"Unsaid leaves \('_lock',\) out .* give it a _rebuild method"):
        pickle.loads(state)


class HandledModule(RebuiltOnUnpickle, torch.nn.Module):
    """A torch module with a handle, the mixin first among its bases as its docstring says."""

    _REBUILT = ("_lock",)

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)
        self._rebuild()

    def _rebuild(self) -> None:
        self._lock = threading.Lock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")  # (dynamo's import)
def test_a_torch_module_with_handles_pickles_as_a_plain_module_does_after_compile() -> None:
    """Before: the mixin's __getstate__ replaced torch.nn.Module's instead of going through it, so a module that had
    been compiled (``module.compile()``, whose compiled forward cannot be pickled and which torch leaves out) could not
    be pickled or deep-copied at all ("Can't pickle <function Module._call_impl ...>")."""
    original = HandledModule().eval()
    original.compile()
    x = torch.ones(1, 2)
    for twin in _copies(original):
        assert twin._lock is not original._lock and not twin.training
        assert "_compiled_call_impl" not in twin.__dict__  # the copy runs its forward uncompiled, as torch's own does
        torch.testing.assert_close(twin.linear(x), original.linear(x))


def test_a_card_without_a_weight_file_says_so_in_facekit_list() -> None:
    """Before (helper-215): an encoder with random weights, whose card lists WeightsSource(file="", ...) as
    CONTRIBUTING.md says, showed an empty "model:" line in `facekit list`."""
    from facekit.types import ModelCard, WeightsSource

    card = ModelCard(weights=(WeightsSource(file="", sha256="", licence="random weights from a seed"),))
    assert card.summary_fields()["model"] == "no weight file"
