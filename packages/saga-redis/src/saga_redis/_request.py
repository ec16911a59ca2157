"""The one request path: every operation's script call goes through :class:`RequestPath`,
which refuses calls once the storage is closed, runs the script and translates what the
transport raises into the core's errors."""

from __future__ import annotations

import itertools
import os
from typing import Any

from saga_core import SagaError, StorageUnavailableError

from ._lua import ArgsT, KeysT, Script, Transport, run_script
from ._replies import transport_error


class RequestPath:
    """Runs a storage's scripts on its transport, and hands out its write tokens.

    Args:
        transport: how commands reach Redis.
        key_prefix: the storage's key prefix, named in the errors it raises.
    """

    __slots__ = ("_closed", "_key_prefix", "_token_base", "_tokens", "_transport")

    def __init__(self, transport: Transport, key_prefix: str) -> None:
        self._transport = transport
        self._key_prefix = key_prefix
        # Write tokens: unique per write, so a write the client retried after a lost reply is
        # recognised as already applied instead of reported as a conflict.
        self._token_base = f"{os.urandom(6).hex()}-"
        self._tokens = itertools.count()
        self._closed = False

    def check_open(self) -> None:
        """Raise :class:`~saga_core.StorageUnavailableError` if the storage is closed."""
        if self._closed:
            raise StorageUnavailableError("the Redis saga storage is closed")

    def token(self) -> str:
        """A new write token, unique to this storage."""
        return f"{self._token_base}{next(self._tokens)}"

    async def run(self, script: Script[KeysT, ArgsT], keys: KeysT, args: ArgsT) -> Any:
        """Run ``script`` and return its reply.

        Raises:
            StorageUnavailableError: the storage is closed, or Redis cannot be reached.
            SagaError: the core's error for anything else the transport raised.
        """
        self.check_open()
        try:
            return await run_script(self._transport, script, keys, args)
        except SagaError:
            raise
        except Exception as exc:
            raise transport_error(exc, self._key_prefix, self._transport.where) from exc

    @property
    def transport(self) -> Transport:
        """The transport the scripts go through (listeners subscribe on it too)."""
        return self._transport

    async def open(self) -> None:
        """Open what the transport opens itself (see :meth:`Transport.open`).

        Raises:
            StorageUnavailableError: the storage is closed, or Redis cannot be reached.
        """
        self.check_open()
        try:
            await self._transport.open()
        except SagaError:
            raise
        except Exception as exc:
            raise transport_error(exc, self._key_prefix, self._transport.where) from exc

    def refuse_calls(self) -> None:
        """Refuse every later call; the transport stays open until :meth:`aclose`."""
        self._closed = True

    async def aclose(self) -> None:
        """Refuse every later call and close the transport (a client the storage was given
        stays open: its transport does not close it). Idempotent."""
        self._closed = True
        await self._transport.aclose()
