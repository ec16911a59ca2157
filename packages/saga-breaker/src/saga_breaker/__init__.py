"""saga-breaker: an aiobreaker circuit breaker for saga-core ``Fallback`` steps.

Use it in a saga's steps::

    from saga_breaker import AioBreakerAdapter

    Fallback(step=ReserveInventory, fallback=ReserveLater,
             circuit_breaker=AioBreakerAdapter(fail_max=5, timeout_duration=60))

or by name from configuration: ``saga_core.load_breaker("aiobreaker", fail_max=5)``, which finds
this package through its entry point. It runs on asyncio and trio; circuits may be shared by
several processes through Redis (``redis="redis://..."``). Details are in the README.
"""

from ._adapter import AioBreakerAdapter as AioBreakerAdapter

__all__ = ("AioBreakerAdapter",)
