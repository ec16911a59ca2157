"""The Lua scripts: where their text comes from, how their arguments are typed, and the one way
a script is run.

Each script is a file of the package's ``lua`` folder, run after ``lua/prelude.lua`` (the
helpers the scripts share): :func:`script_source` joins the two, and that is the only way
scripts share code. A script's first lines name its keys and arguments, one per line, in the
order they are passed::

    local record = KEYS[1]
    local saga_id = ARGV[1]
    local entries_at = 11  -- ARGV[11..]: the journal entries

A :class:`Script` pairs the file with two ``NamedTuple`` types, one for ``KEYS`` and one for
``ARGV``, whose fields are those names in that order; a test reads the files and fails when a
tuple and its script disagree. A script that takes a variable number of trailing arguments
names the index of the first (``local <field>_at = <n>``): the tuple's last field, a sequence
of strings, is spread over ``ARGV[n..]``.

:func:`run_script` is the one request path: every storage operation runs its script through
it, over whichever :class:`Transport` the storage was opened with.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from importlib.resources import files
from typing import Any, Generic, Protocol, TypeVar

import coredis.exceptions
import redis

#: The scripts' folder inside the package.
LUA_FOLDER = "lua"
#: The file put before every script: the helpers scripts share.
PRELUDE = "prelude.lua"

KeysT = TypeVar("KeysT", bound=tuple[str, ...])
ArgsT = TypeVar("ArgsT", bound=tuple[Any, ...])


def read_lua(file_name: str) -> str:
    """The text of ``lua/<file_name>`` as shipped in the package.

    Raises:
        FileNotFoundError: the package has no such file.
    """
    return files("saga_redis").joinpath(LUA_FOLDER, file_name).read_text(encoding="utf-8")


def script_source(name: str) -> str:
    """The source Redis runs for the script ``name``: the prelude, then ``lua/<name>.lua``.

    Raises:
        FileNotFoundError: the package has no such script.
    """
    return read_lua(PRELUDE) + read_lua(f"{name}.lua")


class Script(Generic[KeysT, ArgsT]):
    """One Lua script: its source, the SHA1 Redis knows it by, and the types of its keys and
    arguments (see the module's docstring).

    Args:
        name: the script's file in ``lua/``, without ``.lua``.
        keys: the ``NamedTuple`` of its ``KEYS``, in order.
        args: the ``NamedTuple`` of its ``ARGV``, in order.
        spread_last: the last field of ``args`` is a sequence spread over the rest of
            ``ARGV``.
    """

    __slots__ = ("args", "keys", "name", "sha", "source", "spread_last")

    def __init__(
        self, name: str, keys: type[KeysT], args: type[ArgsT], *, spread_last: bool = False
    ) -> None:
        self.name = name
        self.keys = keys
        self.args = args
        self.spread_last = spread_last
        self.source = script_source(name)
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    def argv(self, args: ArgsT) -> tuple[str, ...]:
        """``args`` as the script's ``ARGV``: the trailing list, if any, spread."""
        if self.spread_last:
            return (*args[:-1], *args[-1])
        return args

    def __repr__(self) -> str:
        return f"Script({self.name!r})"


class Transport(Protocol):
    """Sends commands to Redis over some client; translates nothing (:mod:`._request` does)."""

    @property
    def where(self) -> str | None:
        """The deployment the commands go to, without credentials, for error messages; None
        when the client was given to the storage (its own errors name the address)."""
        ...

    async def evalsha(self, sha: str, keys: tuple[str, ...], argv: Sequence[str]) -> Any:
        """Run the script loaded as ``sha`` with ``keys`` and ``argv`` and return its reply.

        Raises the client's exception for an error reply (``NOSCRIPT`` included) or a lost
        connection."""
        ...

    async def script_load(self, source: str) -> None:
        """Load a script's source into the server's script cache."""
        ...

    async def listen(
        self, channel: str, on_subscribed: Callable[[], None], on_message: Callable[[], None]
    ) -> None:
        """Subscribe to the pub/sub ``channel`` on a connection of its own, call
        ``on_subscribed()`` once the server confirms it, then ``on_message()`` for each
        message, until cancelled.

        Raises the client's exception when the connection is lost or cannot be opened (it
        never reconnects by itself: :mod:`._notifications` does, and says so)."""
        ...

    async def open(self) -> None:
        """Open what the transport opens itself (a client built from a URL); nothing for a
        client the storage was given."""
        ...

    async def aclose(self) -> None:
        """Release what the transport opened itself. Idempotent."""
        ...


def is_not_loaded(exc: BaseException) -> bool:
    """Whether ``exc`` is the server's answer to a script it does not know (``NOSCRIPT``:
    restarted, failed over, or ``SCRIPT FLUSH``)."""
    return isinstance(exc, (redis.exceptions.NoScriptError, coredis.exceptions.NoScriptError))


async def run_script(
    transport: Transport, script: Script[KeysT, ArgsT], keys: KeysT, args: ArgsT
) -> Any:
    """Run ``script`` with ``keys`` and ``args`` and return its reply: ``EVALSHA``, and when
    the server does not know the script, ``SCRIPT LOAD`` then ``EVALSHA`` again.

    Raises:
        Exception: what the transport raises (the caller translates it).
    """
    argv = script.argv(args)
    try:
        return await transport.evalsha(script.sha, keys, argv)
    except Exception as exc:
        if not is_not_loaded(exc):
            raise
    await transport.script_load(script.source)
    return await transport.evalsha(script.sha, keys, argv)
