"""The gateway file: what parses, what is refused (with its table path), matching, targets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from devkit import api_support
from watcher import gateway_config

SECRET = "k3Yq9-Vb2_Zr8LmN0pXc7TfWs4HjUe6AoIdGyRnE1Ql"

MINIMAL = """
[upstreams.weather]
url = "http://127.0.0.1:9000"

[[routes]]
method = "GET"
path = "/v1/forecast/{city}"
upstream = "weather"
price_usd = "0.30"

[[routes]]
method = "GET"
path = "/v1/health"
upstream = "weather"
free = true
"""

UPSTREAM = '[upstreams.weather]\nurl = "http://127.0.0.1:9000"\n'


def settings(**over: Any) -> Any:
    return api_support.make_settings(**over)


def load(
    tmp_path: Path, text: str, env: dict[str, str] | None = None, **over: Any
) -> gateway_config.GatewayConfig:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return gateway_config.load(path, settings(**over), environ=env or {})


def refused(tmp_path: Path, text: str, env: dict[str, str] | None = None, **over: Any) -> str:
    with pytest.raises(gateway_config.GatewayConfigError) as info:
        load(tmp_path, text, env, **over)
    message = str(info.value)
    assert str(tmp_path / "gateway.toml") in message
    return message


def route(body: str, *, upstream: str = UPSTREAM) -> str:
    """The file with one upstream and one route of ``body`` (plus method/path/upstream)."""
    base = 'method = "GET"\npath = "/v1/x"\nupstream = "weather"\n'
    return f"{upstream}\n[[routes]]\n{base}{body}\n"


def test_the_docs_minimal_example_parses(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL)
    up = config.upstreams["weather"]
    assert (up.url, dict(up.headers), up.timeout_seconds, up.connect_timeout_seconds) == (
        "http://127.0.0.1:9000",
        {},
        30.0,
        5.0,
    )
    assert up.secret is None
    paid, free = config.routes
    assert (paid.index, paid.label, paid.upstream_path) == (
        0,
        "GET /v1/forecast/{city}",
        "/v1/forecast/{city}",
    )
    assert (paid.price_units, paid.calls, paid.free) == (300_000, 3, False)
    assert paid.rails == {"token", "x402", "subscription"}
    assert (paid.tiers, paid.rate_limit_per_minute, paid.max_body_bytes) == (None, None, 1 << 20)
    assert (free.free, free.price_units, free.calls, free.rails) == (
        True,
        0,
        0,
        frozenset({"free"}),
    )


def test_every_key_parses(tmp_path: Path) -> None:
    text = """
[upstreams.weather]
url = "https://api.example.test/base/"
timeout_seconds = 12.5
connect_timeout_seconds = 2
secret = { env = "WEATHER_SECRET" }
[upstreams.weather.headers]
X-Api-Key = { env = "WEATHER_API_KEY" }

[[routes]]
method = ["GET", "HEAD"]
path = "/v1/files/{name:path}"
upstream = "weather"
upstream_path = "/api/{name}"
price_usd = "0.25"
rails = ["x402"]
rate_limit_per_minute = 120
max_body_bytes = 2048
stream_request = true
description = "files"

[[routes]]
method = "POST"
path = "/v1/pro"
upstream = "weather"
price_usd = "1.00"
rails = ["subscription"]
tiers = ["pro"]
"""
    env = {"WEATHER_SECRET": SECRET, "WEATHER_API_KEY": "abc"}
    config = load(tmp_path, text, env, stripe_price_id_pro="price_pro")
    up = config.upstreams["weather"]
    assert up.url == "https://api.example.test/base"
    assert (up.timeout_seconds, up.connect_timeout_seconds) == (12.5, 2.0)
    assert (dict(up.headers), up.secret) == ({"X-Api-Key": "abc"}, SECRET.encode())
    files, pro = config.routes
    assert files.label == "GET,HEAD /v1/files/{name:path}"
    assert (files.price_units, files.calls, files.rails) == (250_000, None, frozenset({"x402"}))
    assert (files.rate_limit_per_minute, files.max_body_bytes, files.stream_request) == (
        120,
        2048,
        True,
    )
    assert files.description == "files"
    assert (pro.tiers, pro.calls, pro.methods) == (frozenset({"pro"}), 10, frozenset({"POST"}))


def test_the_default_secret_is_watcher_gateway_secret(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL, watcher_gateway_secret=SECRET)
    assert config.upstreams["weather"].secret == SECRET.encode()


def test_a_syntax_error_names_tomls_line_and_column(tmp_path: Path) -> None:
    message = refused(tmp_path, UPSTREAM + '\n[[routes]]\nmethod = "GET\n')
    assert "not valid TOML" in message and "line 5, column 14" in message


@pytest.mark.parametrize(
    ("body", "where", "words"),
    [
        ("price_usd = 0.30", "routes[0].price_usd", "TOML number"),
        ("price_usd = 1", "routes[0].price_usd", "TOML number"),
        ('price_usd = "0.0000001"', "routes[0].price_usd", "6 decimal"),
        ('price_usd = "abc"', "routes[0].price_usd", "not a number"),
        ('price_usd = "NaN"', "routes[0].price_usd", "not a number"),
        ('price_usd = "0"', "routes[0].price_usd", "free = true"),
        ('price_usd = "-0.10"', "routes[0].price_usd", "above 0"),
        ("", "routes[0].price_usd", "missing"),
        ('free = true\nprice_usd = "0.10"', "routes[0].price_usd", "not both"),
        ('free = "yes"', "routes[0].free", "true or false"),
        ('price_usd = "0.10"\nprise_usd = "0.10"', "routes[0].prise_usd", "unknown key"),
        ('price_usd = "0.10"\nrails = ["card"]', "routes[0].rails", "'card' is not a rail"),
        ('price_usd = "0.10"\nrails = []', "routes[0].rails", "non-empty"),
        ('free = true\nrails = ["x402"]', "routes[0].rails", "free route"),
        ('price_usd = "0.10"\nrate_limit_per_minute = 0', "routes[0].rate_limit", "above 0"),
        ('price_usd = "0.10"\nmax_body_bytes = -1', "routes[0].max_body_bytes", "above 0"),
        ('price_usd = "0.10"\nstream_request = 1', "routes[0].stream_request", "true or"),
        ('price_usd = "0.10"\ndescription = 3', "routes[0].description", "string"),
    ],
)
def test_route_values_refused(tmp_path: Path, body: str, where: str, words: str) -> None:
    message = refused(tmp_path, route(body))
    assert where in message and words in message
    assert "(line 4)" in message  # the [[routes]] header


def test_a_price_that_is_not_whole_calls_names_the_route_and_the_fix(tmp_path: Path) -> None:
    message = refused(tmp_path, route('price_usd = "0.25"\nrails = ["x402", "token"]'))
    assert "routes[0].price_usd" in message and "GET /v1/x" in message
    assert 'rails = ["x402"]' in message and "multiple of 0.10" in message
    assert "X402_PRICE_PER_CALL" in message
    message = refused(tmp_path, route('price_usd = "0.25"\nrails = ["subscription"]'))
    assert "routes[0].price_usd" in message and "subscription" in message
    # x402 alone charges any amount in base units
    only_x402 = load(tmp_path, route('price_usd = "0.000001"\nrails = ["x402"]'))
    assert (only_x402.routes[0].price_units, only_x402.routes[0].calls) == (1, None)


def test_the_whole_calls_rule_follows_x402_price_per_call(tmp_path: Path) -> None:
    config = load(tmp_path, route('price_usd = "0.25"'), x402_price_per_call="0.05")
    assert config.routes[0].calls == 5


def test_tiers_need_the_subscription_rail_and_a_sold_tier(tmp_path: Path) -> None:
    body = 'price_usd = "0.10"\nrails = ["token"]\ntiers = ["pro"]'
    assert "routes[0].tiers" in refused(tmp_path, route(body), stripe_price_id_pro="price_1")
    message = refused(tmp_path, route('price_usd = "0.10"\ntiers = ["team"]'))
    assert "routes[0].tiers" in message and "STRIPE_PRICE_ID_TEAM" in message
    message = refused(tmp_path, route('price_usd = "0.10"\ntiers = ["gold"]'))
    assert "'gold' is not a tier" in message
    config = load(tmp_path, route('price_usd = "0.10"\ntiers = ["team"]'), stripe_price_id_team="p")
    assert config.routes[0].tiers == frozenset({"team"})


@pytest.mark.parametrize(
    ("extra", "where", "words"),
    [
        ('url = "ftp://h"', "upstreams.weather.url", "http"),
        ('url = "http://h/?a=1"', "upstreams.weather.url", "query"),
        ('url = "http://h/#x"', "upstreams.weather.url", "fragment"),
        ('url = "http://u:p@h/"', "upstreams.weather.url", "credentials"),
        ('url = "http://h:99999/"', "upstreams.weather.url", "port"),
        ('url = "http:///x"', "upstreams.weather.url", "host"),
        ("url = 3", "upstreams.weather.url", "missing"),
        ('url = "http://h"\ntimeout_seconds = 0', "upstreams.weather.timeout_seconds", "above"),
        ('url = "http://h"\nconnect = 1', "upstreams.weather.connect", "unknown key"),
        ('url = "http://h"\nsecret = "hunter2"', "upstreams.weather.secret", '{ env = "NAME" }'),
        ('url = "http://h"\nsecret = { env = "NOPE" }', "upstreams.weather.secret", "NOPE"),
        ('url = "http://h"\nsecret = { env = "1x" }', "upstreams.weather.secret.env", "'1x'"),
        ('url = "http://h"\nheaders = { X-Key = "v" }', "upstreams.weather.headers.X-Key", "env"),
        (
            'url = "http://h"\nheaders = { X-Key = { env = "EMPTY" } }',
            "upstreams.weather.headers.X-Key",
            "EMPTY is not set",
        ),
        (
            'url = "http://h"\nheaders = { Host = { env = "SET" } }',
            "upstreams.weather.headers.Host",
            "cannot be injected",
        ),
        (
            'url = "http://h"\nheaders = { X-Payment-Rail = { env = "SET" } }',
            "upstreams.weather.headers.X-Payment-Rail",
            "cannot be injected",
        ),
        (
            'url = "http://h"\nheaders = { X-Key = { env = "SET", default = "x" } }',
            "upstreams.weather.headers.X-Key.default",
            "unknown key",
        ),
    ],
)
def test_upstream_values_refused(tmp_path: Path, extra: str, where: str, words: str) -> None:
    text = route('price_usd = "0.10"', upstream=f"[upstreams.weather]\n{extra}\n")
    message = refused(tmp_path, text, {"EMPTY": " ", "SET": "v"})
    assert where in message and words in message
    assert "(line 1)" in message  # the [upstreams.weather] header


def test_a_header_value_with_a_line_break_is_refused(tmp_path: Path) -> None:
    up = '[upstreams.weather]\nurl = "http://h"\nheaders = { X-Key = { env = "K" } }\n'
    message = refused(tmp_path, route('price_usd = "0.10"', upstream=up), {"K": "a\r\nEvil: 1"})
    assert "upstreams.weather.headers.X-Key" in message and "line break" in message


def test_production_needs_a_strong_secret_for_every_upstream(tmp_path: Path) -> None:
    prod: dict[str, Any] = {"watcher_env": "production"}
    message = refused(tmp_path, MINIMAL, **prod)
    assert "upstreams.weather.secret" in message and "WATCHER_GATEWAY_SECRET" in message
    weak = route('price_usd = "0.10"', upstream=UPSTREAM + 'secret = { env = "S" }\n')
    message = refused(tmp_path, weak, {"S": "short-secret-1234"}, **prod)
    assert "upstreams.weather.secret" in message and "too weak" in message
    assert load(tmp_path, weak, {"S": SECRET}, **prod).upstreams["weather"].secret


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("v1/x", "does not start with /"),
        ("/v1//x", "empty segment"),
        ("/v1/{a}/{a}", "twice"),
        ("/v1/{rest:path}/x", "last segment"),
        ("/v1/{bad-name}", "not a literal"),
        ("/v1/x y", "cannot hold"),
        ("/v1/../x", "dot segment"),
        ("/v1/x?a=1", "query"),
        ("/x402/mine", "/x402"),
        ("/gateway/authorize", "/gateway"),
        ("/api/v1/anything", "/api/v1"),
        ("/healthz", "/healthz"),
        ("/readyz", "/readyz"),
        ("/metrics", "/metrics"),
        ("/docs", "/docs"),
        ("/redoc", "/redoc"),
        ("/openapi.json", "/openapi.json"),
        ("/admin/x", "/admin"),
        ("/{anything}", "collides"),
        ("/{all:path}", "collides"),
        ("/api/{v}/x", "/api/v1"),
    ],
)
def test_paths_refused(tmp_path: Path, path: str, words: str) -> None:
    text = UPSTREAM + f'\n[[routes]]\nmethod = "GET"\npath = "{path}"\nupstream = "weather"\n'
    message = refused(tmp_path, text + 'price_usd = "0.10"\n')
    assert "routes[0].path" in message and words in message


def test_paths_near_reserved_ones_are_allowed(tmp_path: Path) -> None:
    for path in ("/api", "/api/v2/x", "/x4022", "/healthzz", "/v1/{city}", "/"):
        text = UPSTREAM + f'[[routes]]\nmethod = "GET"\npath = "{path}"\nupstream = "weather"\n'
        assert load(tmp_path, text + "free = true\n").routes[0].path == path


@pytest.mark.parametrize(
    ("lines", "where", "words"),
    [
        ('method = "get"\npath = "/v1/x"\nupstream = "weather"', "routes[0].method", "'get'"),
        ('method = "TRACE"\npath = "/v1/x"\nupstream = "weather"', "routes[0].method", "TRACE"),
        ('method = []\npath = "/v1/x"\nupstream = "weather"', "routes[0].method", "missing"),
        ('path = "/v1/x"\nupstream = "weather"', "routes[0].method", "missing"),
        ('method = "GET"\nupstream = "weather"', "routes[0].path", "missing"),
        ('method = "GET"\npath = "/v1/x"\nupstream = "rain"', "routes[0].upstream", "'rain'"),
        (
            'method = "GET"\npath = "/v1/{a}"\nupstream = "weather"\nupstream_path = "/u/{b}"',
            "routes[0].upstream_path",
            "{b} is not a parameter",
        ),
        (
            'method = "GET"\npath = "/v1/x"\nupstream = "weather"\nupstream_path = "u"',
            "routes[0].upstream_path",
            "start with /",
        ),
    ],
)
def test_route_shape_refused(tmp_path: Path, lines: str, where: str, words: str) -> None:
    message = refused(tmp_path, f"{UPSTREAM}\n[[routes]]\n{lines}\nfree = true\n")
    assert where in message and words in message


def test_duplicate_and_same_shape_routes_are_refused(tmp_path: Path) -> None:
    def two(a: str, b: str, ma: str = '"GET"', mb: str = '"GET"') -> str:
        return (
            f'{UPSTREAM}[[routes]]\nmethod = {ma}\npath = "{a}"\nupstream = "weather"\n'
            "free = true\n"
            f'[[routes]]\nmethod = {mb}\npath = "{b}"\nupstream = "weather"\nfree = true\n'
        )

    message = refused(tmp_path, two("/v1/x", "/v1/x"))
    assert "routes[1].path" in message and "routes[0]" in message and "(line 8)" in message
    assert "routes[1].path" in refused(tmp_path, two("/v1/{a}", "/v1/{b}"))
    assert "routes[1].path" in refused(tmp_path, two("/v1/x", "/v1/x", '["GET","POST"]', '"POST"'))
    assert len(load(tmp_path, two("/v1/x", "/v1/x", '"GET"', '"POST"')).routes) == 2
    assert len(load(tmp_path, two("/v1/{a}", "/v1/{a:path}")).routes) == 2


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = (
        '[upstreams.weather]\nurl = "ftp://h"\n'
        '[[routes]]\nmethod = "GET"\npath = "/v1/a"\nupstream = "weather"\nprice_usd = 0.3\n'
        '[[routes]]\nmethod = "GET"\npath = "/healthz"\nupstream = "weather"\nprise_usd = "1"\n'
        "[extra]\n"
    )
    message = refused(tmp_path, text)
    for where in (
        "upstreams.weather.url (line 1)",
        "routes[0].price_usd (line 3)",
        "routes[1].path (line 8)",
        "routes[1].prise_usd (line 8)",
        "routes[1].price_usd (line 8)",
        "extra: unknown key",
    ):
        assert where in message
    assert "6 problem(s)" in message


def test_an_empty_file_asks_for_upstreams_and_routes(tmp_path: Path) -> None:
    message = refused(tmp_path, "")
    assert "upstreams: no upstream" in message and "routes: no route" in message


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(gateway_config.GatewayConfigError, match="cannot read"):
        gateway_config.load(tmp_path / "missing.toml", settings())
