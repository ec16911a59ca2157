"""Dependency injection for step classes: the built-in :class:`Container` and the step resolvers.

The executor builds every step class through a :class:`StepResolver` made by
:func:`make_step_resolver` from whatever the user passed as ``di_container=``: ``None``, a
:class:`Container`, a ``di.Container`` (the ``di`` package, imported lazily) or any callable
``cls -> instance`` (whose result may be awaitable).
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol, TypeVar, Union, cast

from saga_core._model.errors import DependencyResolutionError, SagaUsageError

__all__ = ["Container", "StepResolver", "make_step_resolver"]

T = TypeVar("T")

_EMPTY = inspect.Parameter.empty
_SKIPPED_KINDS = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
_UnionType: Any = getattr(types, "UnionType", Union)  # ``X | None`` (3.10+)


class _Param(typing.NamedTuple):
    """One injectable parameter of a constructor or factory (the cached construction plan)."""

    name: str
    type: Any  # None when the parameter has no annotation
    default: Any  # inspect.Parameter.empty when there is none
    positional_only: bool


def _name(tp: Any) -> str:
    """A short readable name for a type or callable in error messages."""
    if isinstance(tp, type) and not isinstance(tp, types.GenericAlias):
        return tp.__qualname__
    return getattr(tp, "__qualname__", None) or repr(tp)


def _unwrap_optional(tp: Any) -> Any:
    """``X | None`` and ``Optional[X]`` -> ``X``; any other type is returned as is."""
    if typing.get_origin(tp) in (Union, _UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _why_not_buildable(tp: Any) -> str | None:
    """Why ``tp`` cannot be built by constructor injection, or ``None`` when it can."""
    if not isinstance(tp, type) or isinstance(tp, types.GenericAlias):
        return "is not a class"
    if tp.__module__ == "builtins":
        return "is a built-in type"
    if getattr(tp, "_is_protocol", False):
        return "is a Protocol"
    if inspect.isabstract(tp):
        return "is abstract"
    cls: Any = tp
    if cls.__init__ is object.__init__ and cls.__new__ is not object.__new__:
        return "defines __new__ but no __init__ to inject into"
    return None


class Container:
    """The built-in dependency injection container: registrations plus constructor injection.

    ``register(T, instance)`` binds a singleton, ``register_factory(T, factory)`` a callable run
    on every resolution (its parameters injected by type hints), and ``resolve(cls)`` builds
    anything else by injecting its ``__init__`` parameters by their annotations, recursively.
    A parameter with a default keeps it unless its type is registered. Construction plans are
    compiled once per type and cached (registering anything clears the compiled builders).
    """

    __slots__ = ("_builders", "_factories", "_instances", "_plans", "_resolver")

    def __init__(self) -> None:
        self._instances: dict[Any, Any] = {}
        self._factories: dict[Any, Callable[..., Any]] = {}
        self._builders: dict[Any, Callable[[], Any]] = {}
        self._plans: dict[Any, tuple[_Param, ...]] = {}
        self._resolver: _ContainerResolver | None = None

    def register(self, type_: type[T], instance: T) -> None:
        """Bind ``type_`` to ``instance``, returned by every resolution of ``type_``.

        Raises ``SagaUsageError`` when ``type_`` is not a class or ``instance`` is not an
        instance of it (a Protocol that is not runtime-checkable is not checked).
        """
        if not isinstance(type_, type) or isinstance(type_, types.GenericAlias):
            raise SagaUsageError(f"Container.register expects a class, got {type_!r}")
        unchecked = getattr(type_, "_is_protocol", False) and not getattr(
            type_, "_is_runtime_protocol", False
        )
        if not unchecked and not isinstance(instance, type_):
            raise SagaUsageError(
                f"Container.register({_name(type_)}, ...) expects an instance of "
                f"{_name(type_)}, got {instance!r} of type {_name(type(instance))}; "
                "to register a callable that builds it, use Container.register_factory"
            )
        self._factories.pop(type_, None)
        self._instances[type_] = instance
        self._builders.clear()

    def register_factory(self, type_: type[T], factory: Callable[..., T]) -> None:
        """Bind ``type_`` to ``factory``, called on every resolution of ``type_``.

        The factory's own parameters are injected by their type hints, like a constructor's.
        Raises ``SagaUsageError`` when ``factory`` is not callable or is a coroutine function
        (``Container.resolve`` is synchronous: use a callable resolver for async factories).
        """
        if not callable(factory):
            raise SagaUsageError(f"Container.register_factory expects a callable, got {factory!r}")
        if inspect.iscoroutinefunction(factory):
            raise SagaUsageError(
                f"Container.register_factory({_name(type_)}, {_name(factory)}): async factories "
                "are not supported; pass a callable resolver (di_container=async_fn) instead"
            )
        self._instances.pop(type_, None)
        self._factories[type_] = factory
        self._builders.clear()

    def resolve(self, cls: type[T]) -> T:
        """Return the registered instance, the factory's result or a new ``cls`` built by
        constructor injection.

        Raises ``DependencyResolutionError`` naming the class, the parameter chain and the type
        that cannot be built (no annotation, not a buildable class, a cycle, bad type hints).
        Errors raised by constructors and factories themselves propagate unchanged.
        """
        builder = self._builders.get(cls)
        if builder is None:
            builder = self._compile(cls, cls, (), ())
        instance: T = builder()  # a builder of cls builds a cls
        return instance

    def check(self, cls: type[Any]) -> None:
        """Check, without building anything, that :meth:`resolve` can build ``cls`` with the
        registrations made so far.

        Raises ``DependencyResolutionError`` as :meth:`resolve` would (errors that only the
        constructors or factories themselves would raise are not found).
        """
        if cls not in self._builders:
            self._compile(cls, cls, (), ())

    # --- compilation (once per type) ----------------------------------------------------------

    def _compile(
        self, tp: Any, root: Any, hops: tuple[str, ...], building: tuple[Any, ...]
    ) -> Callable[[], Any]:
        """The zero-argument builder of ``tp``; ``hops`` describes the path from ``root``."""
        builder = self._builders.get(tp)
        if builder is not None:
            return builder
        if tp in building:
            chain = " -> ".join(_name(t) for t in (*building[building.index(tp) :], tp))
            _fail(root, hops, f"dependency cycle {chain}")
        if tp in self._instances:
            instance = self._instances[tp]
            builder = partial(_identity, instance)
        elif tp in self._factories:
            factory = self._factories[tp]
            owner = f"factory {_name(factory)} (for {_name(tp)})"
            builder = self._compile_call(factory, owner, root, hops, (*building, tp))
        else:
            why = _why_not_buildable(tp)
            if why is not None:
                _fail(root, hops, f"{_name(tp)} {why}; {_register_hint(tp)}")
            owner = f"{_name(tp)}.__init__"
            builder = self._compile_call(tp, owner, root, hops, (*building, tp))
        self._builders[tp] = builder
        return builder

    def _compile_call(
        self,
        call: Callable[..., Any],
        owner: str,
        root: Any,
        hops: tuple[str, ...],
        building: tuple[Any, ...],
    ) -> Callable[[], Any]:
        """A zero-argument builder calling ``call`` with its injectable parameters resolved."""
        positional: list[tuple[Callable[[], Any], bool]] = []  # (builder, is the default)
        keywords: list[tuple[str, Callable[[], Any]]] = []
        for param in self._plan(call, owner, root, hops):
            target = _unwrap_optional(param.type)
            has_default = param.default is not _EMPTY
            registered = target in self._instances or target in self._factories
            sub: Callable[[], Any] | None = None
            if param.type is None:
                if not has_default:
                    _fail(
                        root,
                        hops,
                        f"{owner} parameter '{param.name}' has no type annotation; "
                        f"{_register_hint(building[-1])}",
                    )
            elif registered or (not has_default and _why_not_buildable(target) is None):
                hop = f"parameter '{param.name}' ({_name(param.type)})"
                sub = self._compile(target, root, (*hops, hop), building)
            elif not has_default:
                why = _why_not_buildable(target)
                _fail(
                    root,
                    hops,
                    f"{owner} parameter '{param.name}' has type {_name(param.type)}, which is "
                    f"not registered and {why}; {_register_hint(target)}",
                )
            if param.positional_only:
                if sub is None:
                    positional.append((partial(_identity, param.default), True))
                else:
                    positional.append((sub, False))
            elif sub is not None:
                keywords.append((param.name, sub))
        while positional and positional[-1][1]:
            positional.pop()  # trailing defaults of positional-only parameters: leave them out
        return _make_builder(call, tuple(b for b, _ in positional), tuple(keywords))

    def _plan(
        self, call: Callable[..., Any], owner: str, root: Any, hops: tuple[str, ...]
    ) -> tuple[_Param, ...]:
        """The cached injectable parameters of ``call`` (a class or a factory)."""
        plan = self._plans.get(call)
        if plan is not None:
            return plan
        target: Any = call
        if isinstance(call, type):
            if target.__init__ is object.__init__:
                self._plans[call] = ()
                return ()
            target = target.__init__
            drop_self = True
        else:
            drop_self = False
        try:
            signature = inspect.signature(target)
            hints_of = target
            while isinstance(hints_of, partial):
                hints_of = hints_of.func
            if not inspect.isfunction(hints_of) and not inspect.ismethod(hints_of):
                hints_of = type(hints_of).__call__
            hints = typing.get_type_hints(hints_of)
        except Exception as exc:
            _fail(root, hops, f"cannot read the signature and type hints of {owner}: {exc}", exc)
        params = list(signature.parameters.values())[1 if drop_self else 0 :]
        plan = tuple(
            _Param(
                p.name,
                hints.get(p.name),
                p.default,
                p.kind is inspect.Parameter.POSITIONAL_ONLY,
            )
            for p in params
            if p.kind not in _SKIPPED_KINDS
        )
        self._plans[call] = plan
        return plan


def _identity(value: T) -> T:
    return value


def _register_hint(tp: Any) -> str:
    return f"register {_name(tp)} with Container.register(...)"


def _fail(
    root: Any, hops: tuple[str, ...], reason: str, cause: BaseException | None = None
) -> typing.NoReturn:
    """Raise the ``DependencyResolutionError`` for ``root``, the parameter chain and ``reason``."""
    raise DependencyResolutionError(
        f"cannot build {_name(root)}: {' -> '.join((*hops, reason))}"
    ) from cause


def _make_builder(
    call: Callable[..., Any],
    positional: tuple[Callable[[], Any], ...],
    keywords: tuple[tuple[str, Callable[[], Any]], ...],
) -> Callable[[], Any]:
    """A zero-argument closure calling ``call``, specialised for the common small shapes."""
    if not positional and not keywords:
        return call
    if not positional and len(keywords) == 1:
        ((name, get),) = keywords
        return lambda: call(**{name: get()})
    if not positional and len(keywords) == 2:
        (name1, get1), (name2, get2) = keywords
        return lambda: call(**{name1: get1(), name2: get2()})
    return lambda: call(*[get() for get in positional], **{n: get() for n, get in keywords})


# --- resolvers ------------------------------------------------------------------------------------


class StepResolver(Protocol):
    """What the executor uses to build a step class, once per step run."""

    async def resolve(self, cls: type[T]) -> T:
        """Return an instance of ``cls``; raises ``DependencyResolutionError`` when it cannot."""
        ...

    def check(self, cls: type[Any]) -> None:
        """Raise ``DependencyResolutionError`` if ``cls`` certainly cannot be built, when that
        can be told without building it (``bootstrap`` checks every bound step this way);
        a resolver that cannot tell does nothing."""
        ...


class _ContainerResolver:
    """Adapter of the built-in :class:`Container`."""

    __slots__ = ("_container", "_resolve")

    def __init__(self, container: Container) -> None:
        self._container = container
        self._resolve = container.resolve

    async def resolve(self, cls: type[T]) -> T:
        return self._resolve(cls)

    def check(self, cls: type[Any]) -> None:
        self._container.check(cls)


class _CallableResolver:
    """Adapter of a callable ``cls -> instance | awaitable``."""

    __slots__ = ("_call",)

    def __init__(self, call: Callable[[type[Any]], Any]) -> None:
        self._call = call

    def check(self, cls: type[Any]) -> None:
        """A callable can only be asked by calling it, which would build the step: nothing
        to check in advance."""

    async def resolve(self, cls: type[T]) -> T:
        result = self._call(cls)
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, cls):
            raise DependencyResolutionError(
                f"the resolver {self._call!r} returned {result!r} for {_name(cls)}, "
                f"which is not an instance of {_name(cls)}"
            )
        return result


class _DiResolver:
    """Adapter of a ``di.Container``: each step class is solved once in the ``"request"`` scope,
    then executed in a fresh ``"request"`` scope per resolution (synchronously when no
    dependency is async, else with di's sequential ``AsyncExecutor``, which runs on any anyio
    backend). Generator dependencies are torn down when the step has been built.
    """

    __slots__ = ("_async_executor", "_container", "_dependent", "_di_error", "_solved", "_sync")

    def __init__(self, container: Any) -> None:
        from di.dependent import Dependent
        from di.exceptions import DependencyInjectionException
        from di.executors import AsyncExecutor, SyncExecutor

        self._container = container
        self._dependent = Dependent
        self._di_error: type[Exception] = DependencyInjectionException
        self._sync = SyncExecutor()
        self._async_executor = AsyncExecutor()
        self._solved: dict[Any, tuple[Any, bool]] = {}

    async def resolve(self, cls: type[T]) -> T:
        entry = self._solved.get(cls)
        if entry is None:
            entry = self._solve(cls)
        solved, is_async = entry
        try:
            if not is_async:
                with self._container.enter_scope("request") as state:
                    return cast(T, solved.execute_sync(self._sync, state))
            async with self._container.enter_scope("request") as state:
                return cast(T, await solved.execute_async(self._async_executor, state))
        except self._di_error as exc:
            raise DependencyResolutionError(
                f"cannot build {_name(cls)} with the di container: {exc}"
            ) from exc

    def check(self, cls: type[Any]) -> None:
        """Solve the step's dependency graph (cached for later resolutions); raises
        ``DependencyResolutionError`` when di cannot."""
        if cls not in self._solved:
            self._solve(cls)

    def _solve(self, cls: Any) -> tuple[Any, bool]:
        try:
            solved = self._container.solve(
                self._dependent(cls, scope="request"), scopes=["request"]
            )
        except Exception as exc:
            raise DependencyResolutionError(
                f"cannot build {_name(cls)} with the di container: {exc}"
            ) from exc
        entry = (solved, any(_is_async_call(dep.call) for dep in solved.dag))
        self._solved[cls] = entry
        return entry


def _is_async_call(call: Any) -> bool:
    """Whether di may need to await ``call`` (errs towards True: the async path runs sync too)."""
    while True:
        if isinstance(call, partial):
            call = call.func
        elif getattr(call, "__wrapped__", None) is not None:
            call = call.__wrapped__
        else:
            break
    candidates = (call, call.__call__ if callable(call) else None)
    return any(inspect.iscoroutinefunction(c) or inspect.isasyncgenfunction(c) for c in candidates)


def _is_di_container(obj: object) -> bool:
    module = type(obj).__module__
    return (
        (module == "di" or module.startswith("di."))
        and hasattr(obj, "solve")
        and hasattr(obj, "enter_scope")
    )


_DEFAULT_RESOLVER = _ContainerResolver(Container())


def make_step_resolver(container: object | None) -> StepResolver:
    """Adapt what the user passed as ``di_container=`` to a :class:`StepResolver`.

    ``None`` builds classes by the built-in rules with no registrations (no-argument steps just
    work); a :class:`Container` resolves through it; a ``di.Container`` through the di adapter
    ; any other
    callable ``cls -> instance`` (the result may be awaitable) is called per resolution.
    A ``di.Container``'s solved graphs are kept by the resolver returned, so keep the
    resolver (or the mediator built with it) rather than adapting the container per call.
    Raises ``SagaUsageError`` for anything else, including a class passed instead of an instance.
    """
    if container is None:
        return _DEFAULT_RESOLVER
    if isinstance(container, Container):
        if container._resolver is None:
            container._resolver = _ContainerResolver(container)
        return container._resolver
    if isinstance(container, (_ContainerResolver, _CallableResolver, _DiResolver)):
        return container
    if _is_di_container(container):
        return _DiResolver(container)
    if isinstance(container, type):
        raise SagaUsageError(
            f"di_container={_name(container)} is a class; pass an instance "
            "(saga_core.Container(), a di.Container() or a callable cls -> instance)"
        )
    if callable(container):
        return _CallableResolver(container)
    raise SagaUsageError(
        f"di_container must be None, a saga_core.Container, a di.Container or a callable "
        f"cls -> instance (or awaitable), got {container!r} of type {_name(type(container))}"
    )
