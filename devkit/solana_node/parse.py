"""Render instructions the way an RPC node's ``jsonParsed`` encoding does.

Covers the programs a USDC payment touches: System, SPL Token (and Token-2022
for the shared instructions), the Associated Token Account program and SPL
Memo. Anything else is shown unparsed (``programId``, ``accounts``, base58
``data``), as a real node does. Field names follow the node's parsers,
including the multisig rule: accounts after the authority are reported as
``multisigAuthority`` + ``signers`` (that is where Solana Pay reference keys
show up in ``jsonParsed``).
"""

from __future__ import annotations

import struct
from decimal import Decimal
from typing import Any

SYSTEM = "11111111111111111111111111111111"
TOKEN = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
TOKEN_2022 = "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb"
ATA = "ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL"
MEMO = "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr"
MEMO_V1 = "Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo"
TOKEN_PROGRAMS = (TOKEN, TOKEN_2022)

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


class NotParsable(Exception):
    pass


def b58encode(data: bytes) -> str:
    num = int.from_bytes(data, "big")
    out = ""
    while num:
        num, rem = divmod(num, 58)
        out = _B58[rem] + out
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + out


def ui_amount(amount: int, decimals: int) -> dict[str, Any]:
    """``uiTokenAmount`` / ``tokenAmount`` as a node prints it."""
    text = str(Decimal(amount).scaleb(-decimals)) if decimals else str(amount)
    if "E" in text or "e" in text:
        text = format(Decimal(amount).scaleb(-decimals), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return {
        "amount": str(amount),
        "decimals": decimals,
        "uiAmount": float(Decimal(amount).scaleb(-decimals)),
        "uiAmountString": text,
    }


def _u64(data: bytes, at: int) -> int:
    if len(data) < at + 8:
        raise NotParsable("short data")
    return int(struct.unpack_from("<Q", data, at)[0])


def _need(accounts: list[str], n: int) -> None:
    if len(accounts) < n:
        raise NotParsable("not enough accounts")


def _signers(info: dict[str, Any], last: int, accounts: list[str], single: str, multi: str) -> None:
    if len(accounts) > last + 1:
        info[multi] = accounts[last]
        info["signers"] = accounts[last + 1 :]
    else:
        info[single] = accounts[last]


def _coption_key(data: bytes, at: int) -> tuple[str | None, int]:
    if len(data) <= at:
        raise NotParsable("short data")
    if data[at] == 1:
        return b58encode(data[at + 1 : at + 33]), at + 33
    return None, at + 1


def _token(data: bytes, accounts: list[str]) -> tuple[str, dict[str, Any]]:
    if not data:
        raise NotParsable("empty")
    tag = data[0]
    info: dict[str, Any]
    if tag in (0, 20):  # InitializeMint / InitializeMint2
        _need(accounts, 1 if tag == 20 else 2)
        decimals = data[1]
        authority = b58encode(data[2:34])
        freeze, _ = _coption_key(data, 34)
        info = {"mint": accounts[0], "decimals": decimals, "mintAuthority": authority}
        if freeze:
            info["freezeAuthority"] = freeze
        if tag == 0:
            info["rentSysvar"] = accounts[1]
        return ("initializeMint" if tag == 0 else "initializeMint2"), info
    if tag == 1:
        _need(accounts, 4)
        return "initializeAccount", {
            "account": accounts[0],
            "mint": accounts[1],
            "owner": accounts[2],
            "rentSysvar": accounts[3],
        }
    if tag in (16, 18):
        _need(accounts, 2)
        info = {"account": accounts[0], "mint": accounts[1], "owner": b58encode(data[1:33])}
        if tag == 16:
            info["rentSysvar"] = accounts[2]
        return ("initializeAccount2" if tag == 16 else "initializeAccount3"), info
    if tag == 3:
        _need(accounts, 3)
        info = {"source": accounts[0], "destination": accounts[1], "amount": str(_u64(data, 1))}
        _signers(info, 2, accounts, "authority", "multisigAuthority")
        return "transfer", info
    if tag == 4:
        _need(accounts, 3)
        info = {"source": accounts[0], "delegate": accounts[1], "amount": str(_u64(data, 1))}
        _signers(info, 2, accounts, "owner", "multisigOwner")
        return "approve", info
    if tag == 7:
        _need(accounts, 3)
        info = {"mint": accounts[0], "account": accounts[1], "amount": str(_u64(data, 1))}
        _signers(info, 2, accounts, "mintAuthority", "multisigMintAuthority")
        return "mintTo", info
    if tag == 8:
        _need(accounts, 3)
        info = {"account": accounts[0], "mint": accounts[1], "amount": str(_u64(data, 1))}
        _signers(info, 2, accounts, "authority", "multisigAuthority")
        return "burn", info
    if tag == 6:
        _need(accounts, 2)
        kinds = ("mintTokens", "freezeAccount", "accountOwner", "closeAccount")
        if len(data) < 3 or data[1] >= len(kinds):
            raise NotParsable("setAuthority")
        new, _ = _coption_key(data, 2)
        info = {"account" if data[1] >= 2 else "mint": accounts[0], "authorityType": kinds[data[1]]}
        info["newAuthority"] = new
        _signers(info, 1, accounts, "authority", "multisigAuthority")
        return "setAuthority", info
    if tag == 9:
        _need(accounts, 3)
        info = {"account": accounts[0], "destination": accounts[1]}
        _signers(info, 2, accounts, "owner", "multisigOwner")
        return "closeAccount", info
    if tag == 12:
        _need(accounts, 4)
        amount, decimals = _u64(data, 1), data[9]
        info = {
            "source": accounts[0],
            "mint": accounts[1],
            "destination": accounts[2],
            "tokenAmount": ui_amount(amount, decimals),
        }
        _signers(info, 3, accounts, "authority", "multisigAuthority")
        return "transferChecked", info
    if tag == 14:
        _need(accounts, 3)
        amount, decimals = _u64(data, 1), data[9]
        info = {
            "mint": accounts[0],
            "account": accounts[1],
            "tokenAmount": ui_amount(amount, decimals),
        }
        _signers(info, 2, accounts, "mintAuthority", "multisigMintAuthority")
        return "mintToChecked", info
    if tag == 21:
        _need(accounts, 1)
        return "getAccountDataSize", {"mint": accounts[0]}
    if tag == 22:
        _need(accounts, 1)
        return "initializeImmutableOwner", {"account": accounts[0]}
    if tag == 17:
        _need(accounts, 1)
        return "syncNative", {"account": accounts[0]}
    raise NotParsable(f"token instruction {tag}")


def _system(data: bytes, accounts: list[str]) -> tuple[str, dict[str, Any]]:
    if len(data) < 4:
        raise NotParsable("short")
    tag = struct.unpack_from("<I", data, 0)[0]
    if tag == 0:
        _need(accounts, 2)
        return "createAccount", {
            "source": accounts[0],
            "newAccount": accounts[1],
            "lamports": _u64(data, 4),
            "space": _u64(data, 12),
            "owner": b58encode(data[20:52]),
        }
    if tag == 1:
        _need(accounts, 1)
        return "assign", {"account": accounts[0], "owner": b58encode(data[4:36])}
    if tag == 2:
        _need(accounts, 2)
        return "transfer", {
            "source": accounts[0],
            "destination": accounts[1],
            "lamports": _u64(data, 4),
        }
    if tag == 4:
        _need(accounts, 3)
        return "advanceNonce", {
            "nonceAccount": accounts[0],
            "recentBlockhashesSysvar": accounts[1],
            "nonceAuthority": accounts[2],
        }
    if tag == 8:
        _need(accounts, 1)
        return "allocate", {"account": accounts[0], "space": _u64(data, 4)}
    raise NotParsable(f"system instruction {tag}")


def _ata(data: bytes, accounts: list[str]) -> tuple[str, dict[str, Any]]:
    kind = data[0] if data else 0
    if kind not in (0, 1):
        raise NotParsable("ata")
    _need(accounts, 6)
    return ("create" if kind == 0 else "createIdempotent"), {
        "source": accounts[0],
        "account": accounts[1],
        "wallet": accounts[2],
        "mint": accounts[3],
        "systemProgram": accounts[4],
        "tokenProgram": accounts[5],
    }


def parse_instruction(
    program_id: str, accounts: list[str], data: bytes, stack_height: int | None
) -> dict[str, Any]:
    """One instruction in ``jsonParsed`` form (parsed when the program is known)."""
    try:
        parsed: Any
        if program_id in (MEMO, MEMO_V1):
            try:
                parsed, program = data.decode("utf-8"), "spl-memo"
            except UnicodeDecodeError as exc:
                raise NotParsable("memo not utf-8") from exc
        elif program_id in TOKEN_PROGRAMS:
            kind, info = _token(data, accounts)
            parsed = {"info": info, "type": kind}
            program = "spl-token" if program_id == TOKEN else "spl-token-2022"
        elif program_id == SYSTEM:
            kind, info = _system(data, accounts)
            parsed, program = {"info": info, "type": kind}, "system"
        elif program_id == ATA:
            kind, info = _ata(data, accounts)
            parsed, program = {"info": info, "type": kind}, "spl-associated-token-account"
        else:
            raise NotParsable(program_id)
        return {
            "parsed": parsed,
            "program": program,
            "programId": program_id,
            "stackHeight": stack_height,
        }
    except (NotParsable, IndexError, struct.error):
        return raw_instruction(program_id, accounts, data, stack_height)


def raw_instruction(
    program_id: str, accounts: list[str], data: bytes, stack_height: int | None
) -> dict[str, Any]:
    return {
        "accounts": accounts,
        "data": b58encode(data),
        "programId": program_id,
        "stackHeight": stack_height,
    }
