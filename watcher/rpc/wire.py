"""JSON-RPC on the wire: request bodies, answers decoded into results or typed errors.

Nothing here does I/O or keeps state: the pool hands an ``httpx.Response`` in
and gets a result (or a list of results for a batch) back, or one of the
``errors.RpcError`` subclasses. Which of those errors another endpoint could
fix (transport, timeout, HTTP 5xx, 429, garbage) is decided by
:func:`is_transient`; the pool retries only those.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from watcher import errors, keys

# Messages providers use when an eth_getLogs range or result set is too large.
_RANGE_PATTERNS = re.compile(
    r"(query returned more than \d+ results|block range is too (large|wide)|"
    r"range (is )?too large|exceed(s|ed)? (the )?(max(imum)?|limit)|response size|"
    r"limit exceeded|too many (results|logs|blocks))",
    re.IGNORECASE,
)
_SUGGESTED_RANGE = re.compile(r"\[(0x[0-9a-fA-F]+),\s*(0x[0-9a-fA-F]+)\]")
RANGE_ERROR_CODES = {-32005, -32602, -32614}

# Rate-limit wording (Infura -32005 "request rate exceeded", Alchemy 429 "compute units
# per second", QuickNode -32007 "request limit reached", Ankr "retry in 10s").
# Kept narrow on purpose: Alchemy's eth_getLogs range refusal says "size exceeded ... You
# can make eth_getLogs requests with up to a 2K block range", which is no rate limit.
_RATE_PATTERNS = re.compile(
    r"(rate.?limit|request rate|rate exceeded|too many requests|request limit reached|"
    r"compute units per second|throttl|request count exceeded)",
    re.IGNORECASE,
)
_RATE_CODES = {429, -32007, -32029, -32090}
_RETRY_HINT = re.compile(
    r"(?:retry|try again|back ?off)\D{0,20}?(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|sec|seconds?)\b",
    re.IGNORECASE,
)
# Solana nodes answer -32005 "Node is behind by N slots" / "Node is unhealthy": another
# node can answer, so it is a transport-class failure, not the node's verdict.
_NODE_UNHEALTHY = re.compile(r"node is (behind|unhealthy)", re.IGNORECASE)
# Codes that are the node's verdict on the request itself, whatever the HTTP status:
# execution reverted, parse error, invalid request, method not found, invalid params.
_VERDICT_CODES = {3, -32700, -32600, -32601, -32602}
# A whole batch refused because it is too big, rather than because batches are unsupported.
_BATCH_TOO_LARGE = re.compile(r"(too large|too many|exceed|limit)", re.IGNORECASE)


class BatchRejected(errors.RpcError):
    """The endpoint refused a JSON-RPC batch as such; the calls may be sent one by one."""

    def __init__(self, message: str, *, endpoint: str | None = None, too_large: bool) -> None:
        self.too_large = too_large
        super().__init__(message, endpoint=endpoint)


class Timeout(errors.RpcTransportError):
    """The endpoint did not answer in time."""


def body(req_id: int, method: str, params: Sequence[Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": req_id, "method": method, "params": list(params)}


def is_transient(exc: BaseException) -> bool:
    """True when another attempt (here or on another endpoint) may succeed."""
    return isinstance(exc, errors.RpcTransportError | errors.RpcRateLimited)


def outcome_of(exc: BaseException | None) -> str:
    """The ``outcome`` label of ``watcher_rpc_requests_total`` for a call's ending."""
    if exc is None:
        return "ok"
    if isinstance(exc, Timeout):
        return "timeout"
    if isinstance(exc, errors.RpcRateLimited):
        return "rate_limited"
    if isinstance(exc, errors.WrongChain):
        return "refused"
    if isinstance(exc, errors.RpcResponseError | BatchRejected):
        return "rpc_error"
    return "transport"


def retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def rate_limit_hint(message: str, data: object) -> float | None:
    """A wait suggested in a rate-limit error: ``data.backoff_seconds`` (Infura) or the text."""
    found = _find_key(data, ("backoff_seconds", "retry_after", "retryAfter"))
    if isinstance(found, int | float) and not isinstance(found, bool) and found >= 0:
        return float(found)
    m = _RETRY_HINT.search(message)
    if m:
        amount = float(m.group(1))
        return amount / 1000 if m.group(2).lower().startswith("m") else amount
    return None


def _find_key(data: object, keys: tuple[str, ...], depth: int = 0) -> object:
    if depth > 3 or not isinstance(data, Mapping):
        return None
    for key in keys:
        if key in data:
            return data[key]
    for value in data.values():
        found = _find_key(value, keys, depth + 1)
        if found is not None:
            return found
    return None


def classify_rpc_error(
    method: str, code: int | None, message: str, endpoint: str, data: object = None
) -> errors.RpcError:
    """Turn a JSON-RPC error object into our exception (range refusals get their own type)."""
    if code in _RATE_CODES or _RATE_PATTERNS.search(message):
        return errors.RpcRateLimited(
            f"{endpoint}: {method}: {message}",
            endpoint=endpoint,
            retry_after=rate_limit_hint(message, data),
        )
    if method == "eth_getLogs" and (code == -32005 or _RANGE_PATTERNS.search(message)):
        m = _SUGGESTED_RANGE.search(message)
        suggested = (int(m.group(1), 16), int(m.group(2), 16)) if m else None
        return errors.RangeTooLarge(message, endpoint=endpoint, code=code, suggested=suggested)
    if _NODE_UNHEALTHY.search(message):
        return errors.RpcTransportError(f"{endpoint}: {message}", endpoint=endpoint)
    return errors.RpcResponseError(message, endpoint=endpoint, code=code, data=data)


def _error_of(method: str, obj: object, label: str) -> errors.RpcError:
    err = obj if isinstance(obj, Mapping) else {}
    raw_code = err.get("code")
    code = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
    message = str(err.get("message", obj))
    return classify_rpc_error(method, code, message, label, err.get("data"))


def _http_problem(resp: httpx.Response, label: str, method: str) -> errors.RpcError | None:
    """The typed error for an HTTP status that is not a JSON-RPC answer, or None."""
    status = resp.status_code
    if status == 429:
        hint = retry_after(resp.headers.get("retry-after"))
        if hint is None:
            payload = _json_or_none(resp)
            if isinstance(payload, Mapping):
                err = payload.get("error")
                if isinstance(err, Mapping):
                    hint = rate_limit_hint(str(err.get("message", "")), err.get("data"))
        return errors.RpcRateLimited(f"{label}: HTTP 429", endpoint=label, retry_after=hint)
    if status == 413 and method == "eth_getLogs":
        return errors.RangeTooLarge(f"{label}: HTTP 413", endpoint=label, code=413)
    if status >= 500:
        verdict = _verdict_in(resp, method, label)
        return verdict or errors.RpcTransportError(f"{label}: HTTP {status}", endpoint=label)
    return None


def _verdict_in(resp: httpx.Response, method: str, label: str) -> errors.RpcError | None:
    """A definite JSON-RPC answer (revert, bad params) that a gateway sent with HTTP 5xx."""
    payload = _json_or_none(resp)
    err = payload.get("error") if isinstance(payload, Mapping) else None
    if isinstance(err, Mapping) and err.get("code") in _VERDICT_CODES:
        return _error_of(method, err, label)
    return None


def _json_or_none(resp: httpx.Response) -> object:
    try:
        return resp.json()
    except ValueError:
        return None


def decode(resp: httpx.Response, method: str, req_id: int, label: str) -> Any:
    """The ``result`` of a single call's answer, or the typed error it stands for."""
    problem = _http_problem(resp, label, method)
    if problem is not None:
        raise problem
    data = _json_or_none(resp)
    if isinstance(data, Mapping) and data.get("error") is not None and resp.status_code < 500:
        # Some nodes send invalid-params answers with HTTP 400: still the node's verdict.
        raise _error_of(method, data["error"], label)
    if resp.status_code >= 400:
        raise errors.RpcTransportError(f"{label}: HTTP {resp.status_code}", endpoint=label)
    if not isinstance(data, Mapping) or "result" not in data:
        raise errors.RpcTransportError(f"{label}: answer is not JSON-RPC", endpoint=label)
    if data.get("id") != req_id:
        raise errors.RpcTransportError(
            f"{label}: answer id {data.get('id')!r} does not match request {req_id}",
            endpoint=label,
        )
    return data["result"]


def decode_batch(
    resp: httpx.Response, methods: Mapping[int, str], order: Sequence[int], label: str
) -> list[Any]:
    """Results of a batch in request order; the first error object raises its typed error."""
    problem = _http_problem(resp, label, "batch")
    if problem is not None:
        raise problem
    data = _json_or_none(resp)
    if isinstance(data, Mapping) or (resp.status_code >= 400 and data is not None):
        raise _whole_batch_error(data, label)
    if resp.status_code >= 400:
        raise errors.RpcTransportError(f"{label}: HTTP {resp.status_code}", endpoint=label)
    by_id = _items_by_id(data, order, label)
    rejected = [by_id[i]["error"] for i in order if by_id[i].get("error") is not None]
    if rejected and all(_refuses_batching(e) for e in rejected):
        raise BatchRejected(
            f"{label}: batch refused: {rejected[0]}", endpoint=label, too_large=False
        )
    out: list[Any] = []
    for i in order:
        item = by_id[i]
        if item.get("error") is not None:
            raise _error_of(methods[i], item["error"], label)
        if "result" not in item:
            raise errors.RpcTransportError(f"{label}: batch item {i} has no result", endpoint=label)
        out.append(item["result"])
    return out


def _whole_batch_error(data: object, label: str) -> errors.RpcError:
    """One error answering a whole batch: a rate limit, or a refusal of (big) batches."""
    err = data.get("error") if isinstance(data, Mapping) else None
    if err is not None:
        typed = _error_of("batch", err, label)
        if is_transient(typed):
            return typed  # rate limited or unhealthy: not a verdict on batching
    message = str(err.get("message", "")) if isinstance(err, Mapping) else str(data)
    return BatchRejected(
        f"{label}: batch refused: {message}",
        endpoint=label,
        too_large=bool(_BATCH_TOO_LARGE.search(message)),
    )


def _items_by_id(data: object, order: Sequence[int], label: str) -> dict[int, Mapping[str, Any]]:
    if not isinstance(data, list):
        raise errors.RpcTransportError(f"{label}: batch answer is not a list", endpoint=label)
    by_id: dict[int, Mapping[str, Any]] = {}
    for item in data:
        if isinstance(item, Mapping) and isinstance(item.get("id"), int):
            by_id[item["id"]] = item
    if set(by_id) != set(order):
        raise errors.RpcTransportError(
            f"{label}: batch answer has {len(by_id)} of {len(order)} ids", endpoint=label
        )
    return by_id


def _refuses_batching(err: object) -> bool:
    if not isinstance(err, Mapping):
        return False
    return err.get("code") == -32600 or "batch" in str(err.get("message", "")).lower()


_WORD = re.compile(r"0x[0-9a-fA-F]{64}")


def abi_uint(value: Any) -> int | None:
    """An ``eth_call`` answer read as one ABI word (a uint256), or None.

    Exactly 32 bytes: an empty answer (no contract there), a short one or a
    longer one is not a number we trust, however it starts.
    """
    if isinstance(value, str) and _WORD.fullmatch(value):
        return int(value, 16)
    return None


def as_head(value: Any, method: str) -> int | None:
    """A head from ``eth_blockNumber`` (hex string) or ``getSlot`` (integer); None if neither."""
    if method == "getSlot":
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(value, str):
        try:
            return int(value, 16)
        except ValueError:
            return None
    return None


def passing_head(
    method: str, params: Sequence[Any], result: Any, *, kind: str, commitment: str
) -> int | None:
    """The head an answer reveals: ``eth_blockNumber``, ``eth_getBlockByNumber("latest")``,
    or ``getSlot`` at ``commitment`` (Solana's default commitment is finalized).

    Only methods of the pool's ``kind`` count: a Solana pool built without
    ``kind="solana"`` then tracks no heads at all rather than judging slots by
    block rules (5 "blocks" of lag is 2 s on Solana).
    """
    if kind == "solana":
        return _slot_head(params, result, commitment) if method == "getSlot" else None
    if method == "eth_blockNumber":
        return as_head(result, method)
    if method == "eth_getBlockByNumber":
        latest = bool(params) and params[0] == "latest" and isinstance(result, Mapping)
        return as_head(result.get("number"), method) if latest else None
    return None


def _slot_head(params: Sequence[Any], result: Any, commitment: str) -> int | None:
    opts = params[0] if params and isinstance(params[0], Mapping) else {}
    at_ours = opts.get("commitment", "finalized") == commitment
    return as_head(result, "getSlot") if at_ours else None


def labels(urls: Sequence[str]) -> list[str]:
    """Redacted endpoint labels, made unique (two keys on one provider host stay apart)."""
    out: list[str] = []
    for url in urls:
        base = keys.redact_url(url)
        label, n = base, 1
        while label in out:
            n += 1
            label = f"{base}#{n}"
        out.append(label)
    return out
