"""Alias polling: each replica re-resolves its aliases every `reload_poll_interval_s`.

Polling, not file watching, because the repository may be a network volume or an object-store
mount where inotify does not fire; a poll is one small JSON read per scenario.
"""

from __future__ import annotations

import asyncio
import logging

from .engine import ScenarioRouter

logger = logging.getLogger("labelwise.serving")


class AliasPoller:
    """Runs router.poll_once in a worker thread, forever, so loading never blocks requests."""

    def __init__(self, router: ScenarioRouter, interval_s: float) -> None:
        self.router = router
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.router.poll_once)
            except Exception:
                # A bad repository state must not stop future polls.
                logger.exception("alias poll failed; retrying in %.1fs", self.interval_s)
            await asyncio.sleep(self.interval_s)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
