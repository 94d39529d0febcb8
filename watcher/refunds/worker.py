"""The refund sender as the daemon runs it: a scheduled job on the jobs leader.

Each pass builds the networks' senders (``senders.senders``: a family's key and an RPC
URL), runs one bounded pass of each (re-check the signed and sent first, then sign and
send the requested), and closes their RPC pools. A new jobs leader runs it at once, so
every start re-checks what a crash left ``signed``. ``watcher refunds send`` runs one
pass by hand.
"""

from __future__ import annotations

import structlog

from watcher import db, errors, jobs
from watcher.refunds import senders
from watcher.settings import Settings

log = structlog.get_logger(__name__)


async def run_pass(settings: Settings, pool: db.Pool) -> dict[str, int]:
    """One pass of every sender; the work done per network (signed, sent, re-checked)."""
    made = senders.senders(settings)
    out: dict[str, int] = {}
    try:
        for s in made:
            try:
                out[s.chain] = await s.run_once(pool)
            except errors.RpcError as exc:  # one network down must not stop the others
                log.warning("refund_pass_rpc_error", chain=s.chain, error=str(exc))
                out[s.chain] = 0
    finally:
        for s in made:
            await s.aclose()
    return out


def build_jobs(settings: Settings) -> list[jobs.Job]:
    """The ``refunds`` job when some network can send refunds; none otherwise."""
    if not senders.sending_networks(settings):
        return []

    async def run(pool: db.Pool) -> dict[str, int]:
        return await run_pass(settings, pool)

    return [jobs.Job("refunds", settings.x402_refund_interval_seconds, run)]
