"""One payment header in, one settled payment out: the path :mod:`api.paywall` calls."""

from __future__ import annotations

from starlette.datastructures import URL

from api.x402 import evm, evm_settle, payload, records, svm_decode, svm_settle
from api.x402.clients import Clients
from watcher import db


async def settle(
    clients: Clients, pool: db.Pool, url: URL, header: str, version: int, cost: int
) -> records.Settled:
    """Match the header to an offer for ``cost`` calls of the route at ``url``, verify it
    offline, settle it on its chain; raises ``errors.Refused`` (402) or ApiError (503)."""
    matched = payload.match(clients.settings, url, header, version, cost)
    if matched.offer.family == "solana":
        checked = svm_decode.verify(clients.settings, matched)
        return await svm_settle.settle(clients, pool, checked, str(url))
    verified = evm.verify(clients.settings, matched)
    return await evm_settle.settle(clients, pool, verified, str(url))
