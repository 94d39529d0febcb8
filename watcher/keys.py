"""Keys, addresses and secrets: parsing and judging them, never storing them.

One home for what settings, the API and the chain code all need: base58, Solana
keypairs and public keys, EVM address checks (EIP-55), how strong a secret
looks, SHA-256 digests of secrets we compare, and URLs with their keys cut out
before they reach a log or a metric label.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from urllib.parse import urlsplit

_HEX_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_BASE58 = re.compile(r"^[1-9A-HJ-NP-Za-km-z]+$")
_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def sha256(text: str) -> bytes:
    """The SHA-256 digest of a secret's UTF-8 text: what we store instead of the secret."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def redact_url(url: str) -> str:
    """``scheme://host[:port]`` only: RPC URLs often carry an API key in the path or query."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def redact_typed(text: str, *, keep_path: bool = False) -> str:
    """A URL as the operator typed it, for an error message: a ``user:password@`` keeps
    the user only, and unless ``keep_path`` the path and query (where RPC providers put
    their API key) become ``/…``. A malformed URL is shown as typed, not re-parsed:
    ``localhost:8545`` stays ``localhost:8545``."""
    text = text.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    # The authority ends at the first /, ? or # after the last @ (a password may hold them).
    at = rest.rfind("@")
    cut = re.search(r"[/?#]", rest[at + 1 :])
    end = len(rest) if cut is None else at + 1 + cut.start()
    authority, tail = rest[:end], rest[end:]
    user, at_sign, host = authority.rpartition("@")
    if at_sign and ":" in user:
        user = user.split(":", 1)[0] + ":***"
    if tail and not keep_path:
        tail = "/…"
    elif keep_path:
        tail = re.sub(r"(?i)(password=)[^&#]*", r"\1***", tail)
    return f"{scheme}{sep}{user}{at_sign}{host}{tail}"


def b58decode(value: str) -> bytes:
    """Decode base58 (Bitcoin alphabet); raises ValueError on foreign characters."""
    if not value or not _BASE58.match(value):
        raise ValueError("not base58")
    num = 0
    for ch in value:
        num = num * 58 + _B58_ALPHABET.index(ch)
    body = num.to_bytes((num.bit_length() + 7) // 8, "big") if num else b""
    pad = len(value) - len(value.lstrip("1"))
    return b"\x00" * pad + body


def is_solana_pubkey(value: str) -> bool:
    """True for 32 bytes of base58 (a wallet, token account or mint address)."""
    try:
        return len(b58decode(value)) == 32
    except ValueError:
        return False


def parse_solana_keypair(text: str) -> bytes:
    """A 64-byte Solana keypair from base58 or a JSON array of ints; ValueError otherwise."""
    text = text.strip()
    if text.startswith("["):
        try:
            raw = bytes(json.loads(text))
        except (ValueError, TypeError) as exc:
            raise ValueError("not a JSON array of 64 byte values") from exc
    else:
        raw = b58decode(text)
    if len(raw) != 64:
        raise ValueError(f"{len(raw)} bytes, a keypair is 64")
    from solders.keypair import Keypair

    try:
        Keypair.from_bytes(raw)
    except ValueError as exc:
        raise ValueError("the public half does not match the secret half") from exc
    return raw


@functools.lru_cache(maxsize=8)
def keypair_address(text: str) -> str:
    """The public half of a keypair, base58 (cached: every 402 names our fee payer)."""
    from solders.keypair import Keypair

    return str(Keypair.from_bytes(parse_solana_keypair(text)).pubkey())


def evm_address_problem(value: str) -> str | None:
    """Why ``value`` is not a usable EVM address, or None when it is."""
    if not _HEX_ADDRESS.match(value):
        return "is not 0x followed by 40 hex digits"
    body = value[2:]
    if body.islower() or body.isupper() or body.isdigit():
        return None  # no checksum to verify
    from eth_utils.address import is_checksum_address

    if not is_checksum_address(value):
        return "has a bad EIP-55 checksum (a typo?); paste the address again or use all lowercase"
    return None


@functools.lru_cache(maxsize=8)
def evm_address_of(private_key: str) -> str:
    """The address (lowercase) of an EVM private key given as 64 hex digits."""
    from eth_account import Account

    return str(Account.from_key(private_key).address).lower()


def checksummed(address: str) -> str:
    """An EVM address as wallets show it (EIP-55)."""
    from eth_utils.address import to_checksum_address

    return str(to_checksum_address(address))


def estimate_key_bits(key: str) -> float:
    """Rough entropy estimate of a secret: length x log2(size of the alphabet it draws from)."""
    if not key:
        return 0.0
    if re.fullmatch(r"[0-9a-fA-F]+", key):
        alphabet = 16
    elif re.fullmatch(r"[0-9a-z]+", key) or re.fullmatch(r"[0-9A-Z]+", key):
        alphabet = 36
    elif re.fullmatch(r"[0-9A-Za-z_\-]+", key):
        alphabet = 64
    else:
        alphabet = 90
    distinct = len(set(key))
    if distinct < 8:  # "aaaa...", "abababab..." are long but guessable
        return distinct * 4.0
    return len(key) * math.log2(alphabet)
