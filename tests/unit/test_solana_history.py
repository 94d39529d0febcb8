"""Signature discovery never hands the follower a list with a gap (fake at the transport seam)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from watcher import errors, rpc
from watcher.chains import solana_history

ACCOUNT = "Efc6bp3wVC2iQpewxRmKdZM8vzt9DCFFhL7EiHYNGunv"


def node(history: list[str], *, forget: frozenset[str] = frozenset()) -> httpx.MockTransport:
    """getSignaturesForAddress over ``history`` (newest first); ``forget``: unknown ``before``s."""

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        _, cfg = body["params"]
        sigs = list(history)
        before = cfg.get("before")
        if before in forget:
            sigs = []  # a lagging endpoint: unknown before -> empty list
        elif before:
            sigs = sigs[sigs.index(before) + 1 :]
        if cfg.get("until") in sigs:
            sigs = sigs[: sigs.index(cfg["until"])]
        result: list[dict[str, Any]] = [
            {
                "signature": s,
                "slot": 100 - i,
                "err": None,
                "memo": None,
                "blockTime": None,
                "confirmationStatus": "finalized",
            }
            for i, s in enumerate(sigs[: cfg["limit"]])
        ]
        return httpx.Response(200, json={"jsonrpc": "2.0", "result": result, "id": body["id"]})

    return httpx.MockTransport(handle)


async def listed(transport: httpx.MockTransport, until: str | None, limit: int) -> list[str]:
    pool = rpc.RpcPool("solana", ["http://127.0.0.1:1"], transport=transport)
    try:
        infos = await solana_history.new_signatures(pool, ACCOUNT, until, page_limit=limit)
    finally:
        await pool.aclose()
    return [i["signature"] for i in infos]


HISTORY = [f"sig{i}" for i in range(9, 0, -1)]  # sig9 newest ... sig1 oldest


async def test_pages_down_to_the_cursor() -> None:
    assert await listed(node(HISTORY), "sig3", limit=2) == [
        "sig9",
        "sig8",
        "sig7",
        "sig6",
        "sig5",
        "sig4",
    ]


async def test_first_run_reads_to_the_beginning() -> None:
    assert await listed(node(HISTORY), None, limit=4) == HISTORY


async def test_a_lagging_endpoint_that_forgets_before_is_a_gap_not_the_end() -> None:
    with pytest.raises(errors.RpcResponseError, match="does not join"):
        await listed(node(HISTORY, forget=frozenset({"sig6"})), "sig3", limit=2)


async def test_nothing_new_needs_no_probe() -> None:
    assert await listed(node(HISTORY), "sig9", limit=2) == []
