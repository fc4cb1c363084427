"""Field reads on pydantic models at the speed of plain attribute reads.

pydantic's ``BaseModel`` defines ``__getattr__``, which serves two things only: private
attributes (``PrivateAttr``, kept in ``__pydantic_private__``) and extra fields
(``extra="allow"``, kept in ``__pydantic_extra__``). Python calls it only after the usual
lookup has failed, but a class with ``__getattr__`` anywhere in its MRO gets the generic
attribute hook: every read of every field goes through it, and Python 3.11 cannot
specialise those reads. The stages read model fields all the time: with the hook gone,
callgrind counted 10.0% fewer instructions in validation and 5.2% fewer in coding (``bench
stage_cv``, 300 office visits), the records written byte for byte the same.

``install`` removes it from ``BaseModel`` and gives it back to every class that needs it
(private attributes or extra fields: one of the ~1,500 models of the libraries claimflow
loads, in pydantic-settings), those that exist and those created later
(``__init_subclass__``). For every other model nothing changes but the speed: a field is
found in the instance's ``__dict__`` as before, and a missing attribute raises the same
``AttributeError``. ``tests/unit/test_model_reads.py`` holds that.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

#: pydantic's ``BaseModel.__getattr__``, once ``install`` has taken it away (None before).
_HOOK: Callable[[Any, str], Any] | None = None


def needs_hook(cls: type) -> bool:
    """Whether instances of ``cls`` keep attributes where only pydantic's hook finds them."""
    config = getattr(cls, "model_config", None) or {}
    return bool(getattr(cls, "__private_attributes__", None)) or config.get("extra") == "allow"


def _give_back(cls: type) -> None:
    if needs_hook(cls) and "__getattr__" not in cls.__dict__:
        cls.__getattr__ = _HOOK  # type: ignore[attr-defined]


def _on_subclass(cls: type[BaseModel], **kwargs: Any) -> None:
    """``BaseModel.__init_subclass__`` once installed: pydantic's metaclass has put the new
    class's ``__private_attributes__`` and ``model_config`` in its namespace by then."""
    super(BaseModel, cls).__init_subclass__(**kwargs)
    _give_back(cls)


def _subclasses(root: type) -> list[type]:
    found: dict[type, None] = {}  # in the order met, each once (a class may have two bases)
    stack = [root]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in found:
                found[sub] = None
                stack.append(sub)
    return list(found)


def install() -> None:
    """Take pydantic's ``__getattr__`` off ``BaseModel``, for good, in this process (a
    second call does nothing)."""
    global _HOOK
    hook = BaseModel.__dict__.get("__getattr__")
    if hook is None:  # installed already, or a pydantic without it: nothing to do
        return
    if "__init_subclass__" in BaseModel.__dict__:
        return  # a pydantic that uses the hook itself: left as it is
    _HOOK = hook
    BaseModel.__init_subclass__ = classmethod(_on_subclass)  # type: ignore[assignment]
    for cls in _subclasses(BaseModel):  # before the hook goes: none of them is without it
        _give_back(cls)
    delattr(BaseModel, "__getattr__")
