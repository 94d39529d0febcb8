"""`watcher run` (followers and metrics, no API) with a heartbeat follower for ``base``.

The two-process leader test runs this: the real chain followers are built on
other branches, so the follower here only beats progress until stopped. The
daemon, the leader election, the metrics server and the database are the real ones.
"""

from __future__ import annotations

import asyncio
import sys

from watcher import daemon, db, logs, progress
from watcher.settings import Settings, load_settings


async def heartbeat(stop: asyncio.Event) -> None:
    while not stop.is_set():
        progress.beat("base")
        try:
            async with asyncio.timeout(0.2):
                await stop.wait()
        except TimeoutError:
            pass


def followers(settings: Settings, pool: db.Pool) -> list[daemon.Follower]:
    return [daemon.Follower("base", heartbeat)]


def main() -> int:
    settings = load_settings()
    logs.configure("info", "json")
    return asyncio.run(daemon.run(settings, with_api=False, followers=followers))


if __name__ == "__main__":
    sys.exit(main())
