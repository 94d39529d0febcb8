"""The gateway file in use: route matching and precedence, targets, settings, the docs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.unit.test_gateway_config import MINIMAL, SECRET, UPSTREAM, load, refused, route, settings
from watcher import gateway_config, gateway_paths

# ---- matching -------------------------------------------------------------------------------


PRECEDENCE = """
[upstreams.u]
url = "http://127.0.0.1:9"
[[routes]]
method = "GET"
path = "/v1/{any:path}"
upstream = "u"
free = true
[[routes]]
method = "GET"
path = "/v1/{kind}/latest"
upstream = "u"
free = true
[[routes]]
method = "GET"
path = "/v1/items/{id}"
upstream = "u"
free = true
[[routes]]
method = ["GET", "POST"]
path = "/v1/items/new"
upstream = "u"
upstream_path = "/create"
free = true
[[routes]]
method = "GET"
path = "/v1/{kind}/{id}"
upstream = "u"
free = true
"""


def test_the_most_specific_route_wins(tmp_path: Path) -> None:
    config = load(tmp_path, PRECEDENCE)

    def found(method: str, path: str) -> tuple[int, dict[str, str]] | None:
        hit = config.find(method, path)
        return None if hit is None else (hit[0].index, hit[1])

    assert found("GET", "/v1/items/new") == (3, {})
    assert found("POST", "/v1/items/new") == (3, {})
    assert found("GET", "/v1/items/7") == (2, {"id": "7"})
    assert found("GET", "/v1/items/latest") == (2, {"id": "latest"})  # literal 2nd segment first
    assert found("GET", "/v1/books/latest") == (1, {"kind": "books"})
    assert found("GET", "/v1/books/7") == (4, {"kind": "books", "id": "7"})
    assert found("GET", "/v1/books/7/pages") == (0, {"any": "books/7/pages"})
    assert found("GET", "/v1/one") == (0, {"any": "one"})
    assert found("POST", "/v1/items/7") is None  # no POST route matches
    assert found("GET", "/v1") is None  # {any:path} needs one segment or more
    assert found("GET", "/v1/") is None
    assert found("GET", "/v2/items/7") is None


def test_segments_never_match_empty_or_dot_values(tmp_path: Path) -> None:
    config = load(tmp_path, PRECEDENCE)
    paths = ("/v1/items/", "/v1/items/..", "/v1/items/%2e%2E", "/v1/a/../b", "/v1/a/%2E/b")
    for path in (*paths, "/v1//x", "/v1/./x", "v1/items/7"):
        assert config.find("GET", path) is None, path
    assert config.find("GET", "/v1/items/...") is not None  # three dots are a name


def test_a_tie_goes_to_the_route_written_first() -> None:
    a, _ = gateway_paths.parse("/v1/{x}/{y:path}")
    b, _ = gateway_paths.parse("/v1/{x}/{z}")
    assert gateway_paths.specificity(b) < gateway_paths.specificity(a)


def test_targets_keep_the_clients_encoding(tmp_path: Path) -> None:
    text = """
[upstreams.u]
url = "http://127.0.0.1:9"
[[routes]]
method = "GET"
path = "/v1/forecast/{city}"
upstream = "u"
upstream_path = "/api/forecast/{city}/today"
free = true
[[routes]]
method = "GET"
path = "/files/{rest:path}"
upstream = "u"
upstream_path = "/store/{rest}"
free = true
"""
    config = load(tmp_path, text)
    hit = config.find("GET", "/v1/forecast/s%C3%A3o%20paulo")
    assert hit is not None
    forecast, params = hit
    assert params == {"city": "s%C3%A3o%20paulo"}
    assert (
        forecast.target(params, "days=3&u=%26")
        == "/api/forecast/s%C3%A3o%20paulo/today?days=3&u=%26"
    )
    assert forecast.target(params, "") == "/api/forecast/s%C3%A3o%20paulo/today"
    hit = config.find("GET", "/files/a/b%20c/d.txt")
    assert hit is not None
    assert hit[0].target(hit[1], "") == "/store/a/b%20c/d.txt"
    # An encoded slash or backslash never matches: an upstream may decode it into a path.
    for walk in (
        "/v1/forecast/..%2Fadmin",
        "/files/a/..%2f..%2Fpaid",
        "/files/..%5Cx",
        "/files/a\\b",
    ):
        assert config.find("GET", walk) is None, walk


def test_the_default_upstream_path_is_the_path(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL)
    hit = config.find("GET", "/v1/forecast/paris")
    assert hit is not None and hit[0].target(hit[1], "x=1") == "/v1/forecast/paris?x=1"


# ---- settings -------------------------------------------------------------------------------


def test_from_settings_loads_the_named_file_or_nothing(tmp_path: Path) -> None:
    assert gateway_config.from_settings(settings()) is None
    path = tmp_path / "g.toml"
    path.write_text(MINIMAL)
    config = gateway_config.from_settings(settings(watcher_gateway_config=str(path)), {})
    assert config is not None and config.path == path and len(config.routes) == 2


def test_a_weak_gateway_secret_is_refused_in_production() -> None:
    weak = settings(watcher_env="production", watcher_gateway_secret="gateway-secret-123")
    assert any(p.startswith("WATCHER_GATEWAY_SECRET: too weak") for p in weak.problems())
    strong = settings(watcher_env="production", watcher_gateway_secret=SECRET)
    assert not any("WATCHER_GATEWAY_SECRET" in p for p in strong.problems())
    assert "gateway-secret-123" not in repr(weak)  # a SecretStr, never shown


def test_the_gateway_listener_needs_host_and_port_together() -> None:
    def listener(s: Any) -> list[str]:
        return [p for p in s.problems() if p.startswith("WATCHER_GATEWAY_")]

    assert listener(settings(watcher_gateway_port=8080))[0].startswith("WATCHER_GATEWAY_HOST|PORT")
    assert listener(settings(watcher_gateway_host="0.0.0.0"))
    assert listener(settings(watcher_gateway_host="127.0.0.1", watcher_gateway_port=8000))
    assert listener(settings(watcher_gateway_host="0.0.0.0", watcher_gateway_port=8080)) == []
    assert listener(settings()) == []


def test_the_docs_examples_parse_as_written(tmp_path: Path) -> None:
    doc = (Path(__file__).parents[2] / "docs" / "gateway.md").read_text()
    section = doc.split("## Configuration file", 1)[1]
    blocks = [b.split("```", 1)[0] for b in section.split("```toml\n")[1:]]
    assert len(blocks) == 2
    smallest = load(tmp_path, blocks[0])
    assert [r.label for r in smallest.routes] == ["GET /v1/forecast/{city}", "GET /v1/health"]
    env = {"WEATHER_GATEWAY_SECRET": SECRET, "WEATHER_API_KEY": "k"}
    fuller = load(tmp_path, blocks[1], env, stripe_price_id_pro="p1", stripe_price_id_team="p2")
    assert fuller.upstreams["weather"].url == "https://weather.internal:8443/base"
    assert [r.calls for r in fuller.routes] == [3, None]
    hit = fuller.find("GET", "/v1/forecast/s%C3%A3o%20paulo")
    assert hit is not None and hit[0].target(hit[1], "days=3") == (
        "/api/forecast/s%C3%A3o%20paulo?days=3"
    )


def test_odd_values_are_problems_not_crashes(tmp_path: Path) -> None:
    text = UPSTREAM + '[[routes]]\nmethod = [["GET"]]\npath = "/v1/x"\nupstream = ["weather"]\n'
    message = refused(tmp_path, text + 'rails = [1]\ntiers = [[2]]\nprice_usd = "0.10"\n')
    for where in ("routes[0].method", "routes[0].upstream", "routes[0].rails"):
        assert where in message
    up = UPSTREAM + 'headers = { X-Key = { env = "K" }, x-key = { env = "K" } }\n'
    message = refused(tmp_path, route('price_usd = "0.10"', upstream=up), {"K": "v"})
    assert "upstreams.weather.headers.x-key" in message and "twice" in message


def test_secrets_and_injected_headers_stay_out_of_repr(tmp_path: Path) -> None:
    up = UPSTREAM + 'headers = { X-Key = { env = "K" } }\n'
    config = load(
        tmp_path,
        route('price_usd = "0.10"', upstream=up),
        {"K": "private-api-key"},
        watcher_gateway_secret=SECRET,
    )
    assert config.upstreams["weather"].headers["X-Key"] == "private-api-key"
    assert "private-api-key" not in repr(config) and SECRET not in repr(config)
