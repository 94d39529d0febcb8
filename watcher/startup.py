"""What a starting process checks first, and how it words a start that cannot happen.

Every failure names the variable to change and how (docs/operations.md, "When it will
not start"). Two kinds, two exit codes (``watcher/__main__.py``):

* a value that cannot work, whatever else happens (a data directory that is a file, a
  production ``watcher run`` that would follow no network): ``errors.ConfigError``, 2;
* a condition of the moment (a port another process holds, a database that does not
  answer): ``errors.ListenError`` / ``errors.DatabaseUnreachable``, 1, which systemd's
  ``Restart=on-failure`` may well outlive.

Ports are bound here, before the database starts, and the sockets handed to the servers:
a port that is taken stops the start before any follower or migration runs, and nothing
else can take the port between the check and the serving.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import structlog
from pydantic import SecretStr

from watcher import chain_settings, errors, keys, networks
from watcher import settings as cfg

log = structlog.get_logger(__name__)

DOCTOR = "`watcher doctor` checks the whole configuration"


def listen(port_var: str, host_var: str, host: str, port: int) -> list[socket.socket]:
    """Listening TCP sockets on ``host:port`` (one per address a name resolves to, as
    asyncio's create_server binds them), or ListenError naming the variable."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise errors.ListenError(
            f"{host_var} {host!r} is not an address or a name this machine resolves; "
            f"set {host_var} to 127.0.0.1, 0.0.0.0 or an address of this machine"
        ) from None
    out: list[socket.socket] = []
    for family, kind, proto, _, address in dict.fromkeys(infos):
        sock = socket.socket(family, kind, proto)
        out.append(sock)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio does
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, True)
            sock.bind(address)
            sock.listen(2048)
        except OSError as exc:
            for s in out:
                s.close()
            raise errors.ListenError(listen_failure(exc, port_var, host_var, host, port)) from exc
        sock.setblocking(False)
    return out


def listen_failure(exc: OSError, port_var: str, host_var: str, host: str, port: int) -> str:
    """What a failed bind means for the operator, naming the variable to change."""
    if exc.errno == errno.EADDRINUSE:
        return (
            f"{port_var} {port} on {host} is already in use; stop the other process "
            f"(`ss -ltnp 'sport = :{port}'` shows it) or set {port_var} to a free port"
        )
    if exc.errno == errno.EACCES:
        return (
            f"{port_var} {port} on {host}: permission denied (ports below 1024 need root or "
            f"CAP_NET_BIND_SERVICE); set {port_var} to a port above 1023"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"{host_var} {host} is not an address of this machine; set {host_var} to "
            "127.0.0.1, 0.0.0.0 or one of its addresses"
        )
    return f"{port_var} {port} on {host}: cannot listen ({exc.strerror}); set {port_var}"


def own_gateway(settings: cfg.Settings) -> bool:
    """The gateway has a listener of its own (WATCHER_GATEWAY_HOST and _PORT both set)."""
    return settings.watcher_gateway_host is not None and settings.watcher_gateway_port is not None


def api_sockets(settings: cfg.Settings) -> dict[str, list[socket.socket]]:
    """The API's listening sockets, by server name (``api``, and ``gateway`` when it has
    its own listener); ListenError naming the variable of the first that cannot open."""
    out = {
        "api": listen(
            "WATCHER_API_PORT", "WATCHER_API_HOST", settings.watcher_api_host,
            settings.watcher_api_port,
        )
    }  # fmt: skip
    if own_gateway(settings):
        assert settings.watcher_gateway_host is not None
        assert settings.watcher_gateway_port is not None
        try:
            out["gateway"] = listen(
                "WATCHER_GATEWAY_PORT", "WATCHER_GATEWAY_HOST", settings.watcher_gateway_host,
                settings.watcher_gateway_port,
            )  # fmt: skip
        except errors.ListenError:
            for sock in out["api"]:
                sock.close()
            raise
    return out


def data_dir_problems(data_dir: Path) -> list[str]:
    """Why the embedded PostgreSQL cannot live under ``data_dir``, as ``VARIABLE: why; fix``."""
    path = Path(data_dir).expanduser()
    fix = "point WATCHER_DATA_DIR at a directory this user may write (it is created if missing)"
    for target in (path, path / "pgdata"):
        if target.exists() and not target.is_dir():
            return [f"WATCHER_DATA_DIR: {str(target)!r} is a file, not a directory; {fix}"]
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return [f"WATCHER_DATA_DIR: {str(path)!r} is under {str(existing)!r}, a file; {fix}"]
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == path else f"cannot be created in {existing}"
        return [
            f"WATCHER_DATA_DIR: {str(path)!r} {what} by this user (uid {os.getuid()}); "
            f"create it and chown it to this user, or {fix}"
        ]
    return []


def check_data_dir(settings: cfg.Settings) -> None:
    """Refuse (ConfigError) a data directory the embedded PostgreSQL cannot use; only
    when there is no DATABASE_URL, since then nothing else lives there."""
    if settings.database_url is None and (found := data_dir_problems(settings.watcher_data_dir)):
        raise errors.ConfigError(found)


def embedded_failure(exc: BaseException, data_dir: Path) -> errors.DatabaseUnreachable:
    """The embedded PostgreSQL did not start: where, and what to try."""
    pgdata = Path(data_dir).expanduser() / "pgdata"
    return errors.DatabaseUnreachable(
        f"the embedded PostgreSQL did not start in WATCHER_DATA_DIR={Path(data_dir)} "
        f"({type(exc).__name__}: {exc}); its log is {pgdata}/log, --debug shows the "
        "traceback; point WATCHER_DATA_DIR at an empty directory, or set DATABASE_URL to a "
        f"PostgreSQL server. {DOCTOR}"
    )


def connect_failure(exc: BaseException, dsn: str) -> errors.DatabaseUnreachable:
    """DATABASE_URL's server did not answer or refused us: its host:port and the fix."""
    typed = keys.redact_typed(dsn, keep_path=True)
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    where = (
        parts.netloc.rpartition("@")[2]
        or ",".join(query.get("host", []))
        or "the default host (a local socket)"
    )
    start = f"DATABASE_URL ({typed}): "
    if isinstance(exc, asyncpg.InvalidPasswordError):
        why = f"{exc}; check the user and password in DATABASE_URL"
    elif isinstance(exc, asyncpg.InvalidCatalogNameError):
        db = parts.path.lstrip("/") or parts.username or "?"
        why = (
            f"{exc} on {where}; create it (createdb -h HOST -U USER {db}) or fix the name "
            "at the end of DATABASE_URL"
        )
    elif isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        why = f"{exc}; check the user in DATABASE_URL and the server's pg_hba.conf"
    elif isinstance(exc, socket.gaierror):
        why = f"the host in {where} is not known here ({exc.strerror}); check the URL"
    elif isinstance(exc, OSError | TimeoutError):
        why = (
            f"nothing answers at {where} ({_reason(exc)}); start "
            "PostgreSQL there, check the host and port in the URL, or unset DATABASE_URL to "
            "use the embedded PostgreSQL"
        )
    else:
        why = f"cannot connect to PostgreSQL at {where} ({exc}); check the URL"
    return errors.DatabaseUnreachable(f"{start}{why}. {DOCTOR}")


def _reason(exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    return os.strerror(code) if isinstance(code, int) else type(exc).__name__


def unfollowed(settings: cfg.Settings) -> list[str]:
    """Each network set up halfway (an address without an RPC URL, or the reverse), as
    ``VARIABLE: why; fix`` naming the missing variable."""
    out = []
    for row in networks.NETWORKS.values():
        p = chain_settings.prefix(row)
        address, rpc = p + "payment_address", p + "rpc_url"
        # Parsed as the follower reads them: "," is an RPC URL list with no URL in it.
        has_address = bool(chain_settings.split(settings.value(address)))
        has_rpc = bool(chain_settings.split(settings.value(rpc)))
        if has_address and not has_rpc:
            unset = "not set" if settings.value(rpc) is None else "holds no URL"
            out.append(
                f"{rpc.upper()}: {unset}, so {row.title} is not followed although "
                f"{address.upper()} is set (payments there would never be credited); set it "
                "to your RPC provider's URL, or unset the address"
            )
        elif has_rpc and not has_address:
            out.append(
                f"{address.upper()}: not set, so {row.title} is not followed although "
                f"{rpc.upper()} is set; set your receiving address, or unset the RPC URL"
            )
    return out


def _followed(settings: cfg.Settings) -> list[str]:
    evm = [c.name for c in settings.evm_chains() if c.enabled]
    return evm + [c.name for c in settings.solana_chains() if c.enabled]


def refuse_unfollowed(settings: cfg.Settings) -> None:
    """In production, ``watcher run`` that would follow no network, or leave one half set
    up, credits nothing there: ConfigError naming each missing variable."""
    if not settings.production:
        return
    problems = unfollowed(settings)
    if not _followed(settings) and not problems:
        problems = [
            "X402_<NETWORK>_PAYMENT_ADDRESS|RPC_URL: no network is set up, so `watcher run` "
            "would follow nothing; set both for at least one network (e.g. "
            "X402_BASE_PAYMENT_ADDRESS and X402_BASE_RPC_URL; docs/networks.md), or run "
            "`watcher api` alone if the followers run elsewhere"
        ]
    if problems:
        raise errors.ConfigError(problems)


def placeholders(settings: cfg.Settings) -> list[str]:
    """The variables holding an example file's placeholder (read as unset in development)."""
    out = []
    for name in type(settings).model_fields:
        raw = getattr(settings, name)
        text = raw.get_secret_value() if isinstance(raw, SecretStr) else raw
        if isinstance(text, str) and cfg.is_placeholder(text):
            out.append(name.upper())
    return out


def warn(settings: cfg.Settings, *, follows: bool) -> None:
    """In development, one warning line per variable read as unset because it holds a
    placeholder, and (for a process that follows chains) per half set-up network."""
    if settings.production:
        return
    for name in placeholders(settings):
        log.warning(
            "placeholder_ignored",
            variable=name,
            fix=f"{name} holds a placeholder and counts as unset; set the real value or "
            "remove it (production refuses placeholders)",
        )
    if not follows:
        return
    for problem in unfollowed(settings):
        variable, _, why = problem.partition(": ")
        log.warning("network_not_followed", variable=variable, fix=why)
    if not _followed(settings):
        log.warning(
            "no_network_followed",
            fix="set X402_<NETWORK>_PAYMENT_ADDRESS and X402_<NETWORK>_RPC_URL for a network "
            "to credit payments there (docs/networks.md)",
        )
