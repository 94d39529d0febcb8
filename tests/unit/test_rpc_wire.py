"""Reading what nodes and providers answer: Retry-After, rate-limit hints, error classes."""

from __future__ import annotations

import email.utils

import pytest

from watcher import errors
from watcher.rpc import classify_rpc_error, wire

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("5", 5.0),
        (" 0 ", 0.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        (email.utils.formatdate(NOW + 120, usegmt=True), 120.0),
        (email.utils.formatdate(NOW - 60, usegmt=True), 0.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
    ],
)
def test_retry_after_reads_seconds_and_http_dates(header: str | None, seconds: float) -> None:
    assert wire.retry_after(header, now=NOW) == seconds


@pytest.mark.parametrize(
    ("message", "data", "seconds"),
    [
        ("project ID request rate exceeded", {"rate": {"backoff_seconds": 30}}, 30.0),
        ("project ID request rate exceeded", {"backoff_seconds": 2.5}, 2.5),
        ("Too many requests, retry in 10s", None, 10.0),
        ("rate limited, try again in 250ms", None, 0.25),
        ("Your app has exceeded its compute units per second capacity", None, None),
    ],
)
def test_rate_limit_hints_from_error_objects(
    message: str, data: object, seconds: float | None
) -> None:
    assert wire.rate_limit_hint(message, data) == seconds


@pytest.mark.parametrize(
    ("method", "code", "message", "kind"),
    [
        ("eth_getLogs", -32005, "query returned more than 10000 results", errors.RangeTooLarge),
        ("eth_getLogs", -32602, "block range is too large", errors.RangeTooLarge),
        ("eth_getLogs", -32005, "project ID request rate exceeded", errors.RpcRateLimited),
        ("eth_call", 429, "exceeded its compute units per second capacity", errors.RpcRateLimited),
        ("eth_call", -32007, "request limit reached", errors.RpcRateLimited),
        ("eth_call", 3, "execution reverted", errors.RpcResponseError),
        ("getSlot", -32005, "Node is behind by 1200 slots", errors.RpcTransportError),
        (
            "eth_getBalance",
            -32602,
            "invalid argument 0: hex string without 0x prefix",
            errors.RpcResponseError,
        ),
    ],
)
def test_error_objects_are_classified(
    method: str, code: int, message: str, kind: type[errors.RpcError]
) -> None:
    exc = classify_rpc_error(method, code, message, "http://node")
    assert type(exc) is kind
    assert wire.is_transient(exc) == (kind in (errors.RpcRateLimited, errors.RpcTransportError))


def test_alchemys_log_size_refusal_is_a_range_error_not_a_rate_limit() -> None:
    text = (
        "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block "
        "range and no limit on the response size, or you can request any block range with a "
        "cap of 10K logs in the response. Based on your parameters, this block range should "
        "work: [0x10, 0x2f]"
    )
    exc = classify_rpc_error("eth_getLogs", -32602, text, "http://node")
    assert isinstance(exc, errors.RangeTooLarge) and exc.suggested == (16, 47)
    limited = classify_rpc_error("eth_getLogs", -32005, "rate limit exceeded", "http://node")
    assert isinstance(limited, errors.RpcRateLimited)


def test_a_suggested_range_in_the_error_text_is_kept() -> None:
    exc = classify_rpc_error(
        "eth_getLogs",
        -32602,
        "Log response size exceeded. this block range should work: [0x1a, 0x2f]",
        "http://node",
    )
    assert isinstance(exc, errors.RangeTooLarge) and exc.suggested == (26, 47)


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("0x" + "00" * 31 + "06", 6),
        ("0x" + "00" * 32, 0),
        ("0x", None),  # no contract at that address
        ("", None),
        ("0x06", None),  # short
        ("0x" + "00" * 63 + "06", None),  # long: two words, the first zero
        ("0x" + "zz" * 32, None),
        (6, None),
        (None, None),
    ],
)
def test_an_eth_call_number_is_exactly_one_abi_word(answer: object, value: int | None) -> None:
    assert wire.abi_uint(answer) == value
