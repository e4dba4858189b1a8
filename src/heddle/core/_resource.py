"""The async-context-manager shape shared by heddle's resources."""

from __future__ import annotations

from typing import Self

__all__ = ["AsyncResource"]


class AsyncResource:
    """``async with resource:`` closes it with ``aclose()`` on the way out.

    Subclasses implement an idempotent ``aclose()``; entering does nothing
    unless a subclass overrides ``__aenter__`` (for eager opening).
    """

    __slots__ = ()

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
