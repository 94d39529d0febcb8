"""Discovery for the Solana follower: new signatures of one account, with no gap.

``getSignaturesForAddress`` lists newest first, up to ``limit`` per page;
older pages come with ``before``, and ``until`` stops at the cursor. A short
page looks the same whether history really ended there or an endpoint did not
know the ``before`` signature (a lagging fallback answers an empty list), so
the list is checked to *join* the cursor before anyone advances it.
"""

from __future__ import annotations

from typing import Any

from watcher import errors, rpc


async def new_signatures(
    client: rpc.RpcPool,
    account: str,
    until: str | None,
    *,
    page_limit: int = 1000,
    max_pages: int = 10_000,
    commitment: str = "confirmed",
) -> list[dict[str, Any]]:
    """Signature infos newer than ``until`` (newest first), every page, joined to ``until``."""
    out: list[dict[str, Any]] = []
    before: str | None = None
    for _ in range(max_pages):
        cfg: dict[str, Any] = {"commitment": commitment, "limit": page_limit}
        if until:
            cfg["until"] = until
        if before:
            cfg["before"] = before
        page = await client.request("getSignaturesForAddress", [account, cfg])
        if not isinstance(page, list):
            raise errors.RpcTransportError("getSignaturesForAddress: the answer is not a list")
        out += page
        if len(page) < page_limit:
            break
        before = str(page[-1]["signature"])
    if out:
        await check_joins(client, account, str(out[-1]["signature"]), until, commitment)
    return out


async def check_joins(
    client: rpc.RpcPool, account: str, oldest: str, until: str | None, commitment: str
) -> None:
    """The signature just older than ``oldest`` must be ``until`` (none on a first run).

    Advancing a cursor over a gap would skip payments for good, so a gap raises
    and the follower retries the pass later.
    """
    cfg = {"commitment": commitment, "limit": 1, "before": oldest}
    probe = await client.request("getSignaturesForAddress", [account, cfg])
    older = str(probe[0]["signature"]) if isinstance(probe, list) and probe else None
    if older != until:
        raise errors.RpcResponseError(
            f"signature history of {account} does not join the cursor: after {oldest} "
            f"comes {older}, expected {until}; retrying"
        )
