"""ERC-20 ``Transfer`` logs and block headers as JSON-RPC returns them: parse, judge, bloom.

Pure functions, no I/O: the follower and ``watcher explain`` share them, so the
verdict an operator sees is the one the follower applied. Hex is parsed by hand
(no web3 objects): the follower runs this once per log on the hot path.

A log is an ERC-20 Transfer only if it has exactly three topics (topic0 the
Transfer signature, two left-padded addresses) and 32 bytes of data. ERC-721
Transfers (four topics) and anything malformed are not transfers at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from eth_utils.crypto import keccak

TRANSFER_TOPIC = "0x" + keccak(text="Transfer(address,address,uint256)").hex()
_PAD = "0x" + "0" * 24  # the 12 zero bytes in front of an address in a topic
_HEX = {n: re.compile(f"0x[0-9a-f]{{{n - 2}}}") for n in (42, 66, 514)}
# A 32-byte topic holding an address: 12 zero bytes, then the 20 address bytes.
_ADDRESS_TOPIC = re.compile(r"0x0{24}[0-9a-f]{40}")

Verdict = Literal["credit", "not_ours", "wrong_token", "zero_value", "below_minimum", "failed_tx"]


@dataclass(frozen=True, slots=True)
class RawTransfer:
    """One ERC-20 Transfer log, addresses and hashes lowercase, amount in base units."""

    tx_hash: str
    log_index: int
    block_number: int | None
    block_hash: str | None
    token: str
    from_address: str
    to_address: str
    amount: int
    block_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class Header:
    """The parts of a block header the follower needs."""

    number: int
    hash: str
    parent_hash: str
    timestamp: int
    bloom: str | None

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp, UTC)


def topic_for(address: str) -> str:
    """An address as an indexed topic: 0x + 24 zeros + 40 lowercase hex."""
    return _PAD + address.lower()[2:]


def _is_hex(text: str, length: int) -> bool:
    return _HEX[length].fullmatch(text) is not None


def parse_transfer(log: Mapping[str, Any]) -> RawTransfer | None:
    """The transfer a log carries, or None when it is not a well-formed ERC-20 Transfer.

    ``removed: true`` logs (a subscription telling us a block left the chain)
    are not transfers either.
    """
    try:
        topics = log["topics"]
        if len(topics) != 3 or str(topics[0]).lower() != TRANSFER_TOPIC or log.get("removed"):
            return None
        src, dst = str(topics[1]).lower(), str(topics[2]).lower()
        data = str(log["data"]).lower()
        if not (_ADDRESS_TOPIC.fullmatch(src) and _ADDRESS_TOPIC.fullmatch(dst)):
            return None
        if not _is_hex(data, 66):
            return None
        tx_hash = str(log["transactionHash"]).lower()
        token = str(log["address"]).lower()
        if not (_is_hex(tx_hash, 66) and _is_hex(token, 42)):
            return None
        number = log.get("blockNumber")
        stamp = log.get("blockTimestamp")
        block_hash = log.get("blockHash")
        return RawTransfer(
            tx_hash=tx_hash,
            log_index=int(log["logIndex"], 16),
            block_number=int(number, 16) if number is not None else None,
            block_hash=str(block_hash).lower() if block_hash is not None else None,
            token=token,
            from_address="0x" + src[26:],
            to_address="0x" + dst[26:],
            amount=int(data, 16),
            block_time=datetime.fromtimestamp(int(stamp, 16), UTC) if stamp else None,
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def verdict(
    t: RawTransfer,
    *,
    usdc: str,
    receivers: frozenset[str] | set[str],
    min_units: int,
    tx_failed: bool = False,
) -> Verdict:
    """What the watcher does with one transfer (the order is what a payer needs to hear first)."""
    if tx_failed:
        return "failed_tx"
    if t.to_address not in receivers:
        return "not_ours"
    if t.token != usdc:
        return "wrong_token"
    if t.amount <= 0:
        return "zero_value"
    if t.amount < min_units:
        return "below_minimum"
    return "credit"


def parse_header(obj: Mapping[str, Any]) -> Header:
    """A header from ``eth_getBlockByNumber`` or a ``newHeads`` notification; ValueError if not."""
    try:
        bloom = obj.get("logsBloom")
        header = Header(
            number=int(obj["number"], 16),
            hash=str(obj["hash"]).lower(),
            parent_hash=str(obj["parentHash"]).lower(),
            timestamp=int(obj["timestamp"], 16),
            bloom=str(bloom).lower() if bloom else None,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"not a block header: {exc!r}") from exc
    if not (_is_hex(header.hash, 66) and _is_hex(header.parent_hash, 66)):
        raise ValueError("not a block header: bad hash")
    return header


# ---- logs bloom (yellow paper 4.4.1: three 11-bit indexes from the keccak of each item) ----


def bloom_bits(item: bytes) -> tuple[tuple[int, int], ...]:
    """(byte offset, mask) of the three bits ``item`` sets in a 256-byte bloom."""
    digest = keccak(item)
    out = []
    for i in (0, 2, 4):
        bit = ((digest[i] << 8) | digest[i + 1]) & 2047
        out.append((255 - bit // 8, 1 << (bit % 8)))
    return tuple(out)


def bloom_has(bloom: bytes, bits: tuple[tuple[int, int], ...]) -> bool:
    return all(bloom[off] & mask for off, mask in bits)


class BloomFilter:
    """Answers "may this block hold a USDC Transfer to one of ours?" from its header alone.

    False means certainly not, so the follower skips ``eth_getLogs`` for the
    block. An all-zero or missing bloom proves nothing (some nodes leave it
    empty), so it answers True and the logs are fetched.
    """

    def __init__(self, usdc: str, receivers: Iterable[str]) -> None:
        self._token = bloom_bits(bytes.fromhex(usdc[2:]))
        self._topic0 = bloom_bits(bytes.fromhex(TRANSFER_TOPIC[2:]))
        self._receivers = [bloom_bits(bytes.fromhex(topic_for(r)[2:])) for r in receivers]

    def may_match(self, bloom_hex: str | None) -> bool:
        if not bloom_hex or not _is_hex(bloom_hex, 514):
            return True
        bloom = bytes.fromhex(bloom_hex[2:])
        if not any(bloom):
            return True
        if not (bloom_has(bloom, self._token) and bloom_has(bloom, self._topic0)):
            return False
        return any(bloom_has(bloom, bits) for bits in self._receivers)
