"""Recursive length prefix encoding (Ethereum yellow paper, appendix B), encode only:
what the unsigned EIP-1559 export needs (integers, byte strings, lists)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

Item: TypeAlias = "int | bytes | Sequence[Item]"


def _length(n: int, offset: int) -> bytes:
    if n < 56:
        return bytes([offset + n])
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([offset + 55 + len(size)]) + size


def encode(item: Item) -> bytes:
    """The RLP of ``item``: a non-negative integer (big-endian, no leading zeros), bytes,
    or a list of items."""
    if isinstance(item, int):
        if item < 0:
            raise ValueError("RLP encodes non-negative integers only")
        item = item.to_bytes((item.bit_length() + 7) // 8, "big") if item else b""
    if isinstance(item, bytes):
        if len(item) == 1 and item[0] < 0x80:
            return item
        return _length(len(item), 0x80) + item
    body = b"".join(encode(x) for x in item)
    return _length(len(body), 0xC0) + body
