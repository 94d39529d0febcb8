"""The ``watcher`` command line: run, migrate, api (and more as the issues land).

Exit codes: 0 success, 1 runtime failure (a database that does not answer, a port in
use), 2 bad configuration or usage. Either way one message names the variable and the
fix (watcher/startup.py); the traceback only with ``--debug`` or WATCHER_LOG_LEVEL=debug.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import traceback
from collections.abc import Sequence

import structlog

from watcher import (
    __version__,
    daemon,
    db,
    errors,
    gateway_config,
    logs,
    networks,
    refunds_cli,
    sentry,
    service_keys_cli,
    startup,
    webhooks_cli,
)
from watcher.settings import Settings, load_settings

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def _cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    startup.refuse_unfollowed(settings)  # production: a daemon that credits nothing
    startup.warn(settings, follows=True)
    return asyncio.run(daemon.run(settings, with_api=not args.no_api))


def _cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    startup.warn(settings, follows=False)  # follows nothing by design (compose runs it so)
    return asyncio.run(daemon.run(settings, with_api=True, with_followers=False))


def _cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    async def go() -> list[str]:
        async with daemon.database(settings) as pool, pool.acquire() as conn:
            return await db.pending_migrations(conn)

    pending = asyncio.run(go())  # daemon.database() migrates on entry
    print("migrations: up to date" if not pending else f"still pending: {pending}")
    return EXIT_OK if not pending else EXIT_FAILURE


def _cmd_explain(args: argparse.Namespace, settings: Settings) -> int:
    from watcher import explain

    output, code = asyncio.run(explain.run(args, settings))
    print(output, file=sys.stdout if code == 0 else sys.stderr)
    return code


def _add_explain(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "explain",
        help="why a transaction was (or was not) credited",
        description="Judge every token transfer of a transaction the way the follower does. "
        "Live from the chain's RPC, or offline from a saved receipt, receipt list, log list "
        "or getTransaction answer.",
    )
    p.add_argument("--chain", required=True, choices=networks.NAMES)
    p.add_argument(
        "tx",
        nargs="?",
        metavar="TX",
        help="transaction hash or Solana signature (optional with a file)",
    )
    p.add_argument(
        "--from-file",
        metavar="PATH",
        help="read a saved JSON-RPC answer instead (bare or in its envelope)",
    )
    p.add_argument(
        "--receiver",
        action="append",
        default=[],
        metavar="ADDR",
        help="our receiving address, or the Solana owner (repeatable)",
    )
    p.add_argument(
        "--token", metavar="ADDR", help="the token contract or mint to accept instead of USDC"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--all", action="store_true", help="also list transfers that are not ours")
    p.set_defaults(func=_cmd_explain)


def _cmd_stripe_sync(args: argparse.Namespace, settings: Settings) -> int:
    # The API's Stripe modules, loaded only for this command (chain code never imports api/).
    import json
    from datetime import UTC, datetime, timedelta

    from api import stripe_sync

    async def go() -> dict[str, int]:
        async with daemon.database(settings) as pool:
            since = datetime.now(UTC) - timedelta(hours=args.hours)
            return await stripe_sync.run(settings, pool, since)

    print(json.dumps(asyncio.run(go()), sort_keys=True))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="watcher",
        description="USDC payment watcher: credits confirmed payments on Base, Ethereum and "
        "Solana in PostgreSQL and serves the paywall API. Configured by environment "
        "variables (or .env); see README.",
        epilog=EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "run",
        help="the daemon: migrations, followers, API and metrics",
        description="Apply pending migrations, then follow every network that has a "
        "receiving address and an RPC URL, credit confirmed payments, deliver webhooks, run "
        "the scheduled jobs, and serve the API (WATCHER_API_HOST:PORT) and Prometheus "
        "metrics (WATCHER_METRICS_HOST:PORT) until SIGTERM. In production it refuses to "
        "start when it would follow no network.",
    )
    p.add_argument("--no-api", action="store_true", help="followers and metrics only")
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser(
        "api",
        help="the API server alone (no followers)",
        description="Serve the HTTP API on WATCHER_API_HOST:PORT (and the gateway on its "
        "own listener when WATCHER_GATEWAY_HOST/PORT are set), answering from the database "
        "that `watcher run` processes fill. Follows no chain, runs no jobs.",
    )
    p.set_defaults(func=_cmd_api)
    p = sub.add_parser(
        "migrate",
        help="apply pending database migrations and exit",
        description="Apply the pending migrations to DATABASE_URL (or the embedded "
        "PostgreSQL) under an advisory lock, then exit; `run` and `api` do it at start too.",
    )
    p.set_defaults(func=_cmd_migrate)
    p = sub.add_parser(
        "doctor",
        help="production-readiness report: settings, RPC, contracts, database, Stripe "
        "(exit 0 only when ready)",
        description="Judge every setting as production would, probe each RPC endpoint, the "
        "USDC contract or mint, the database and Stripe; one row each with the fix. Exit 0 "
        "only when the configuration is ready.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument(
        "--timeout", type=float, default=5.0, help="seconds per check (default 5)", metavar="S"
    )
    _add_explain(sub)
    p = sub.add_parser(
        "stripe-sync",
        help="apply Stripe events the webhook missed (idempotent)",
        description="Fetch Stripe's events of the last HOURS and apply those the webhook "
        "handles; events already applied are skipped. Prints counts by outcome.",
    )
    p.add_argument("--hours", type=int, default=72, help="how far back (Stripe keeps 30 days)")
    p.set_defaults(func=_cmd_stripe_sync)
    service_keys_cli.add_parser(sub)
    refunds_cli.add_parser(sub)
    webhooks_cli.add_parsers(sub)
    for command in sub.choices.values():  # `watcher run --debug` works as well
        # SUPPRESS: unset here must not undo `watcher --debug run`.
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP
        )
        command.epilog = command.epilog or EXIT_CODES
    return parser


def _serves_api(args: argparse.Namespace) -> bool:
    return args.command == "api" or (args.command == "run" and not args.no_api)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug: bool = args.debug
    if args.command == "doctor":
        # The doctor reports a broken configuration instead of refusing it.
        from watcher import doctor

        logs.configure("error", "console")  # the report says it all
        return doctor.run_cli(as_json=args.json, seconds=args.timeout)
    try:
        settings = load_settings()
        if _serves_api(args):
            gateway_config.from_settings(settings)  # a bad gateway file stops the start
    except errors.ConfigError as exc:
        return _failed(exc, EXIT_CONFIG, debug)
    debug = debug or settings.watcher_log_level == "debug"
    logs.configure("debug" if debug else settings.watcher_log_level, settings.watcher_log_format)
    sentry.init(settings)
    try:
        code: int = args.func(args, settings)
    except errors.ConfigError as exc:  # found at start: a data directory, no network...
        return _failed(exc, EXIT_CONFIG, debug)
    except errors.WatcherError as exc:
        structlog.get_logger("watcher").error("fatal", error=str(exc), exc_info=debug)
        return _failed(exc, EXIT_FAILURE, debug)
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:  # a bug: say so in one line, the traceback on request
        structlog.get_logger("watcher").error("fatal", error=repr(exc), exc_info=debug)
        return _failed(exc, EXIT_FAILURE, debug, unexpected=True)
    return code


DEBUG_HELP = "show the traceback of a failure and log at debug level"
EXIT_CODES = (
    "exit codes: 0 ok, 1 runtime failure (database not answering, port in use), "
    "2 bad configuration; the message names the variable and the fix"
)


def _failed(exc: BaseException, code: int, debug: bool, *, unexpected: bool = False) -> int:
    """One message on stderr (and the traceback under --debug); returns the exit code."""
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    if unexpected:
        hint = "" if debug else "; run again with --debug for the traceback"
        print(f"watcher: unexpected {type(exc).__name__}: {exc}{hint}", file=sys.stderr)
    else:
        print(f"watcher: {exc}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
