"""How /gateway/authorize reads the payer's request from each proxy's headers (no I/O)."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from api.errors import ApiError
from api.gateway import forward_auth


def request(path: str = "/gateway/authorize", method: str = "GET", **headers: str) -> Request:
    raw, _, query = path.partition("?")
    scope = {
        "type": "http",
        "method": method,
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "path": raw,
        "raw_path": raw.encode(),
        "query_string": query.encode(),
        "headers": [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()]
        + [(b"host", b"127.0.0.1:8000")],
    }
    return Request(scope)


def test_nginx_headers_win_and_make_the_public_url() -> None:
    got = forward_auth.original(
        request(
            x_original_method="post",
            x_original_uri="/v1/a%2Fb?x=1",
            x_forwarded_method="GET",
            x_forwarded_host="api.example.com, inner",
            x_forwarded_proto="https",
        )
    )
    assert (got.method, got.path, got.query) == ("POST", "/v1/a%2Fb", "x=1")
    assert str(got.url) == "https://api.example.com/v1/a%2Fb?x=1"


def test_traefik_and_caddy_headers() -> None:
    got = forward_auth.original(request(x_forwarded_method="DELETE", x_forwarded_uri="/v1/x"))
    assert (got.method, got.path, str(got.url)) == ("DELETE", "/v1/x", "http://127.0.0.1:8000/v1/x")


def test_envoy_path_after_the_prefix_and_its_own_method() -> None:
    got = forward_auth.original(request("/gateway/authorize/v1/f/paris?days=3", method="PUT"))
    assert (got.method, got.path, got.query) == ("PUT", "/v1/f/paris", "days=3")


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({}, "forward_auth_no_original"),
        ({"x_forwarded_method": "GET"}, "forward_auth_no_original"),
        ({"x_forwarded_method": "G E", "x_forwarded_uri": "/a"}, "forward_auth_bad_original"),
        (
            {"x_forwarded_method": "GET", "x_forwarded_uri": "http://x/a"},
            "forward_auth_bad_original",
        ),
        ({"x_forwarded_method": "GET", "x_forwarded_uri": "/a b"}, "forward_auth_bad_original"),
        (
            {"x_forwarded_method": "GET", "x_forwarded_uri": "/a", "x_forwarded_host": "a/b"},
            "forward_auth_bad_host",
        ),
        (
            {"x_forwarded_method": "GET", "x_forwarded_uri": "/a", "x_forwarded_proto": "ftp"},
            "forward_auth_bad_host",
        ),
    ],
)
def test_what_cannot_be_read_is_a_400(headers: dict[str, str], error: str) -> None:
    with pytest.raises(ApiError) as caught:
        forward_auth.original(request(**headers))
    assert (caught.value.status, caught.value.error) == (400, error)
