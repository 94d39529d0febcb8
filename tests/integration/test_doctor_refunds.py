"""Doctor rows for the refund wallet on anvil: gas and USDC; a key that cannot pay gas fails."""

from __future__ import annotations

import asyncio

from devkit import refundkit
from devkit.anvil import Anvil, Token
from watcher import doctor


def rows_of(rows: list[doctor.report.Check]) -> dict[str, doctor.report.Check]:
    return {r.name: r for r in rows if r.group == "refunds"}


async def test_a_funded_wallet_passes_and_an_empty_keyed_one_fails(
    anvil: Anvil, usdc: Token
) -> None:
    w = await refundkit.world(anvil, usdc)
    got = rows_of(await asyncio.wait_for(doctor.examine(w.settings(), seconds=5.0), 60))
    assert got["base refund gas"].status == "ok", got
    assert got["base refund USDC"].status == "ok" and "$50" in got["base refund USDC"].value

    await anvil.rpc("anvil_setBalance", w.wallet_address, "0x0")
    empty = await refundkit.world(anvil, usdc, wallet_usdc=0)
    await anvil.rpc("anvil_setBalance", empty.wallet_address, "0x0")
    keyed = rows_of(await asyncio.wait_for(doctor.examine(empty.settings(), seconds=5.0), 60))
    assert keyed["base refund gas"].status == "fail" and "ETH" in keyed["base refund gas"].fix
    assert keyed["base refund USDC"].status == "warn"
    signer = rows_of(
        await asyncio.wait_for(doctor.examine(empty.settings(key=False), seconds=5.0), 60)
    )
    assert signer["base refund gas"].status == "warn"  # an outside signer pays when it signs
