"""Attempt isolation: a failed attempt's changes to the context are undone in place.

Every attempt of a step starts from the context as it was last written (the last checkpoint,
which includes every completed step): a retry, the fallback branch and the compensations never
see what a failed attempt changed — exactly what a run recovered from storage would see. The
context is put back *in place*, so whoever holds the object (the caller of ``stream``) keeps
seeing the saga's context.
"""

from __future__ import annotations

import contextlib
import types


def restore_in_place(target: object, source: object) -> None:
    """Make ``target`` hold exactly the state of ``source``, an object of the same class
    (its instance ``__dict__`` and every slot, set or unset), bypassing ``__setattr__`` so
    that frozen dataclasses and validating models are restored too.

    Raises:
        TypeError: the two objects are not of the same class.
    """
    klass = type(source)
    if type(target) is not klass:
        raise TypeError(f"cannot restore a {type(target).__qualname__} from a {klass.__qualname__}")
    for owner in klass.__mro__:
        for attribute in vars(owner).values():
            if isinstance(attribute, types.MemberDescriptorType):  # a slot
                try:
                    value = attribute.__get__(source, owner)
                except AttributeError:  # unset in the source: unset it in the target too
                    with contextlib.suppress(AttributeError):
                        attribute.__delete__(target)
                else:
                    attribute.__set__(target, value)
    state = getattr(source, "__dict__", None)
    if state is not None:
        target_state = object.__getattribute__(target, "__dict__")
        target_state.clear()
        target_state.update(state)
