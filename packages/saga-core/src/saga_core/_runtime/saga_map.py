"""``SagaMap``: which saga, in which versions, runs for which context type."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

from saga_core._codec.context import codec_for
from saga_core._model.errors import SagaDefinitionError, SagaNotRegisteredError
from saga_core._model.saga import Saga

Ctx = TypeVar("Ctx")


def describe_versions(versions: tuple[int, ...]) -> str:
    """``"version 2"`` or ``"versions 1, 2"`` (``"no version"`` for none)."""
    if not versions:
        return "no version"
    numbers = ", ".join(str(version) for version in versions)
    return f"version {numbers}" if len(versions) == 1 else f"versions {numbers}"


class SagaMap:
    """Which saga runs for which context type: ``mapper.bind(OrderContext, OrderSaga)``.

    One saga name may be bound in several versions (``Saga.version``): new sagas start on the
    highest version bound, and recovery runs each stored saga on the version it started with,
    so keep an older version bound until its sagas have finished::

        mapper.bind(OrderContext, OrderSagaV1)   # name = "orders", version = 1
        mapper.bind(OrderContext, OrderSagaV2)   # name = "orders", version = 2

    A context type runs one saga name; a saga name may serve several context types (e.g. a
    context class and its subclasses). ``len(mapper)`` is the number of (name, version)
    definitions bound.
    """

    def __init__(self) -> None:
        self._names: dict[type[Any], str] = {}
        """Context type -> the saga name bound to it."""
        self._versions: dict[str, dict[int, type[Saga[Any]]]] = {}
        """Saga name -> version -> the class of that version."""
        self._contexts: dict[str, list[type[Any]]] = {}
        """Saga name -> the context types bound to it, in binding order."""
        self._bound: set[tuple[type[Any], str, int]] = set()
        """The (context type, name, version) triples bound, to refuse binding one twice."""
        self.revision = 0
        """Counts the binds: a mediator that remembers which saga a context type starts
        compares it, so a version bound later is started from then on."""

    def bind(self, context_type: type[Ctx], saga_type: type[Saga[Ctx]]) -> None:
        """Run ``saga_type`` for contexts of ``context_type`` (and its subclasses).

        Bind every version of a saga (same ``name``, ``version`` 1, 2, ...) that may still
        have sagas in flight; new sagas start on the highest one.

        Raises:
            SagaDefinitionError: ``saga_type`` is not a Saga with steps; its context type is
                not a base of ``context_type``; the context type is bound already to another
                saga name; this name and version are bound already (to this context type,
                or as another class); or a version bound to the same name does not run on
                every context type bound to it.
        """
        if not (isinstance(saga_type, type) and issubclass(saga_type, Saga)):
            raise SagaDefinitionError(f"SagaMap.bind needs a Saga subclass, got {saga_type!r}")
        if not isinstance(context_type, type):
            raise SagaDefinitionError(f"SagaMap.bind needs a context class, got {context_type!r}")
        definition = saga_type.definition()
        name, version = definition.name, definition.version
        declared = definition.context_type
        if declared is not None and not issubclass(context_type, declared):
            raise SagaDefinitionError(
                f"{saga_type.__qualname__} runs on {declared.__qualname__}, which "
                f"{context_type.__qualname__} is not"
            )
        codec_for(context_type)  # an unstorable context type fails here, at wiring time
        versions = self._versions.get(name, {})
        contexts = self._contexts.get(name, [])
        bound_name = self._names.get(context_type)
        if bound_name is not None and bound_name != name:
            raise SagaDefinitionError(
                f"{context_type.__qualname__} is bound already, to saga {bound_name!r}; "
                f"{saga_type.__qualname__} is named {name!r}. A context type runs one saga: "
                f"give every version of that saga the same `name`, or bind "
                f"{saga_type.__qualname__} to a context type of its own"
            )
        other = versions.get(version)
        if other is not None and other is not saga_type:
            raise SagaDefinitionError(
                f"two sagas are named {name!r} with version {version}: {other.__qualname__} "
                f"and {saga_type.__qualname__}; give the newer one the next `version` "
                f"({max(versions) + 1}), or a distinct `name`"
            )
        if (context_type, name, version) in self._bound:
            assert other is not None
            raise SagaDefinitionError(
                f"{context_type.__qualname__} is bound already, to {other.__qualname__} "
                f"(saga {name!r} version {version}); bind each version once"
            )
        for bound in versions.values():
            bound_declared = bound.definition().context_type
            if bound_declared is not None and not issubclass(context_type, bound_declared):
                raise SagaDefinitionError(
                    f"saga {name!r} version {bound.version} ({bound.__qualname__}) runs on "
                    f"{bound_declared.__qualname__}, which {context_type.__qualname__} is not; "
                    "every bound version of a saga runs on every context type bound to it"
                )
        for bound_context in contexts:
            if declared is not None and not issubclass(bound_context, declared):
                raise SagaDefinitionError(
                    f"{saga_type.__qualname__} (saga {name!r} version {version}) runs on "
                    f"{declared.__qualname__}, but saga {name!r} is bound to "
                    f"{bound_context.__qualname__} too, which is not one; every bound version "
                    "of a saga runs on every context type bound to it"
                )
        self._versions[name] = {**versions, version: saga_type}
        if context_type not in contexts:
            self._contexts[name] = [*contexts, context_type]
        self._names[context_type] = name
        self._bound.add((context_type, name, version))
        self.revision += 1

    def saga_for(self, context_type: type[Any]) -> type[Saga[Any]]:
        """The highest bound version of the saga bound to ``context_type`` or its nearest
        bound base class: the saga a new context of that type starts.

        Raises:
            SagaNotRegisteredError: nothing is bound for it.
        """
        for klass in context_type.__mro__:
            name = self._names.get(klass)
            if name is not None:
                versions = self._versions[name]
                return versions[max(versions)]
        bound = ", ".join(sorted(t.__qualname__ for t in self._names)) or "nothing"
        raise SagaNotRegisteredError(
            f"no saga is bound to context type {context_type.__qualname__} (bound: {bound}); "
            "bind one with mapper.bind(ContextType, SagaType)"
        )

    def saga_named(self, name: str, version: int | None = None) -> type[Saga[Any]]:
        """The saga class whose stored name is ``name``, in ``version`` (default: the highest
        bound); recovery looks a stored saga up by its name and version.

        Raises:
            SagaNotRegisteredError: no bound saga has that name, or that version is not
                bound (the message names the versions that are).
        """
        versions = self._versions.get(name)
        if versions is None:
            raise SagaNotRegisteredError(f"no bound saga is named {name!r}")
        if version is None:
            return versions[max(versions)]
        found = versions.get(version)
        if found is None:
            raise SagaNotRegisteredError(
                f"saga {name!r} version {version} is not bound (bound: "
                f"{describe_versions(self.versions_of(name))}); bind the class of version "
                f"{version} to run it"
            )
        return found

    def check_children_bound(self) -> None:
        """Check that the child saga of every ``SubSaga`` of the bound sagas is bound too (in
        the version the parent runs): a worker finds a stalled child by its name and version.

        Raises:
            SagaNotRegisteredError: a child saga is not bound (the message says which).
        """
        for versions in self._versions.values():
            for saga in versions.values():
                definition = saga.definition()
                for node in {id(n): n for n in definition.child_steps.values()}.values():
                    child = node.child
                    assert child is not None, "child_steps maps to SubSaga nodes"
                    name, version = child.definition.name, child.definition.version
                    if self._versions.get(name, {}).get(version) is child.definition.saga_type:
                        continue
                    raise SagaNotRegisteredError(
                        f"{saga.__qualname__} runs {child.definition.saga_type.__qualname__} "
                        f"(saga {name!r} version {version}) as a SubSaga, but it is not bound in "
                        "this saga map: bind it too (mapper.bind(<its context type>, "
                        f"{child.definition.saga_type.__qualname__})), so that workers can run it"
                    )

    def versions_of(self, name: str) -> tuple[int, ...]:
        """The versions of saga ``name`` bound here, lowest first (empty if none)."""
        return tuple(sorted(self._versions.get(name, ())))

    def names(self) -> tuple[str, ...]:
        """The saga names bound here, sorted."""
        return tuple(sorted(self._versions))

    def context_types_of(self, name: str) -> tuple[type[Any], ...]:
        """The context types bound to saga ``name``, in binding order (empty if none)."""
        return tuple(self._contexts.get(name, ()))

    def stored_context_type(self, name: str, version: int) -> type[Any] | None:
        """The class to decode a stored context of saga ``name`` (in ``version``) as: the
        context type bound to that name if there is one, else the context type that version
        declares.

        Raises:
            SagaNotRegisteredError: that name and version are not bound.
        """
        bound = self.context_types_of(name)
        if len(bound) == 1:
            return bound[0]
        return self.saga_named(name, version).definition().context_type

    def __iter__(self) -> Iterator[tuple[type[Any], type[Saga[Any]]]]:
        """Every (context type, saga class) pair bound: each bound version once per context
        type of its name."""
        pairs = [
            (context_type, saga)
            for name, versions in self._versions.items()
            for context_type in self._contexts[name]
            for _, saga in sorted(versions.items())
        ]
        return iter(pairs)

    def __len__(self) -> int:
        return sum(len(versions) for versions in self._versions.values())
