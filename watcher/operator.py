"""Who did it: the operator name every admin action carries (issue 16).

One shared admin key cannot tell people apart, so every admin request names its
operator (the ``x-admin-operator`` header, api/operator.py) and every admin CLI
command takes ``--operator`` (or ``WATCHER_OPERATOR``). The name is recorded with the
action (``admin_audit.operator``, a hold's ``reviewed_by``, a refund's ``requested_by``).
It is a label, not a credential: the admin key is the credential.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re

from watcher import errors

ENV = "WATCHER_OPERATOR"
HEADER = "x-admin-operator"
MAX_LEN = 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._@+\-]{0,63}")
RULE = (
    f"1 to {MAX_LEN} characters: letters, digits, space and . _ @ + -, starting with a "
    "letter or digit (a person's name or e-mail, e.g. alice@example.com)"
)


def validate(name: str | None) -> str | None:
    """The operator name, stripped, or None when it is missing or not a valid name."""
    if name is None:
        return None
    name = name.strip()
    return name if _NAME.fullmatch(name) else None


def from_cli(value: str | None) -> str:
    """The operator of a CLI admin command: ``--operator``, else ``WATCHER_OPERATOR``.

    Raises ConfigError (exit 2) naming both when neither gives a valid name.
    """
    given = value if value is not None else os.environ.get(ENV)
    name = validate(given)
    if name is not None:
        return name
    if given is None or not given.strip():
        raise errors.ConfigError(
            [
                f"--operator: say who you are; pass --operator NAME or set {ENV} "
                "(recorded with the action: one shared admin key cannot tell people apart)"
            ]
        )
    raise errors.ConfigError([f"--operator: {given!r} is not an operator name; use {RULE}"])


def add_flag(parser: argparse.ArgumentParser) -> None:
    """``--operator NAME`` on an admin CLI command that changes something."""
    parser.add_argument(
        "--operator",
        metavar="NAME",
        help=f"who is acting, recorded with the action (default: ${ENV}; one is required)",
    )


def cli_client() -> str:
    """Where a CLI action came from, for the audit's ``client`` (the login, not a name
    anyone chose: the operator says who, this says from which account)."""
    try:
        return f"cli:{getpass.getuser()}"[:200]
    except (OSError, KeyError):  # no login name in some containers
        return "cli"
