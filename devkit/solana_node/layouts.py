"""Byte layouts of SPL Token accounts and mints (what jsonParsed and token balances show)."""

from __future__ import annotations

import struct
from typing import Any

from solders.pubkey import Pubkey

from devkit.solana_node import parse


def decode_token_account(data: bytes) -> tuple[str, str, int, int] | None:
    """(mint, owner, amount, state) of an SPL token account, or None."""
    if len(data) < 165 or data[108] == 0:
        return None
    mint = parse.b58encode(data[0:32])
    owner = parse.b58encode(data[32:64])
    amount = int(struct.unpack_from("<Q", data, 64)[0])
    return mint, owner, amount, data[108]


def decode_mint(data: bytes) -> dict[str, Any] | None:
    if len(data) < 82 or data[45] == 0:
        return None
    return {
        "mintAuthority": parse.b58encode(data[4:36]) if data[0] == 1 else None,
        "supply": int(struct.unpack_from("<Q", data, 36)[0]),
        "decimals": data[44],
        "isInitialized": bool(data[45]),
        "freezeAuthority": parse.b58encode(data[50:82]) if data[46] == 1 else None,
    }


def is_token_program(owner: Pubkey) -> bool:
    return str(owner) in parse.TOKEN_PROGRAMS
