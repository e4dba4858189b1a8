"""Holding a durable run's lease while the run goes on.

A run with a checkpointer has one owner, the process driving it, which holds
a :class:`~heddle.workflows.checkpoint.RunLease` in the database. Two things
keep a second process from ever running the same nodes:

* the database fences every write of the run with the owner's token, so a
  process that lost the run (it was paused past its lease, and another one
  claimed the run) cannot record anything more;
* this keeper renews the lease every third of its length and, before each
  attempt, :meth:`LeaseKeeper.guard` checks that the lease cannot have run out
  since the last renewal this process saw succeed. When it might have (the
  process was paused, or the store was unreachable), the guard renews first
  and starts nothing until the renewal succeeds, so a process that lost the
  run starts nothing either.

The guard costs one clock read per attempt while the lease is fresh.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

from heddle.core.errors import LeaseLostError
from heddle.workflows.checkpoint import Checkpointer, RunLease

__all__ = ["LeaseKeeper"]

logger = logging.getLogger("heddle.executor")


class LeaseKeeper:
    """Renews one run's lease; tells the run when this process no longer owns it."""

    def __init__(self, checkpointer: Checkpointer, workflow_id: str, lease: RunLease) -> None:
        self.checkpointer = checkpointer
        self.workflow_id = workflow_id
        self.lease = lease
        self.seconds = checkpointer.lease
        # Monotonic time until which the lease certainly holds: a renewal's `until` is
        # counted from a moment *before* the renewal was sent.
        left = (lease.until - datetime.now(UTC)).total_seconds()
        self.fresh_until = time.monotonic() + left
        self.lost_to: str | None = None
        self.lost = False
        self._renewing: asyncio.Lock | None = None

    @property
    def owner(self) -> str:
        return self.lease.owner

    async def _renew(self) -> bool:
        """Renew once; False if another process took the run (``lost_to`` says who)."""
        sent = time.monotonic()
        lease = self.lease.renewed(self.seconds)
        if await self.checkpointer.renew_lease(self.workflow_id, lease):
            self.lease = lease
            self.fresh_until = max(self.fresh_until, sent + self.seconds)
            return True
        self.lost = True
        try:  # only to say who took it: the run (and its input) may be unreadable
            record = await self.checkpointer.get_run(self.workflow_id)
        except Exception:
            return False
        if record is not None and record.lease is not None:
            self.lost_to = record.lease.owner
        return False

    async def keep(self, driver: asyncio.Task[Any]) -> None:
        """Renew every third of the lease; if the run was taken over, cancel ``driver``.

        A renewal that fails (a locked or unreachable store) is logged and tried
        again: the lease is lost only when another process claims the run.
        """
        while not self.lost:
            await asyncio.sleep(self.seconds / 3)
            try:
                if await self._renew():
                    continue
            except Exception as exc:  # a store hiccup must not end the run
                logger.warning(
                    "run %r: could not renew its lease: %s",
                    self.workflow_id,
                    exc,
                    extra={"workflow_id": self.workflow_id},
                )
                continue
            driver.cancel()

    async def guard(self) -> None:
        """Return if this process surely still owns the run; else renew first.

        Raises :class:`LeaseLostError` when another process has taken the run,
        and the store's error when the renewal cannot be made: either way, the
        attempt about to start must not.
        """
        if time.monotonic() < self.fresh_until and not self.lost:
            return
        if self._renewing is None:
            self._renewing = asyncio.Lock()
        async with self._renewing:  # one renewal for every worker that gets here
            if self.lost:
                raise LeaseLostError(self.workflow_id, self.lost_to)
            if time.monotonic() < self.fresh_until:
                return
            if not await self._renew():
                raise LeaseLostError(self.workflow_id, self.lost_to)
