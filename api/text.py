"""Text PostgreSQL would refuse never reaches it: bad input is a 4xx at the boundary.

PostgreSQL's ``text`` cannot hold a NUL character, and a lone UTF-16 surrogate
(``"\\ud800"`` in JSON) cannot be encoded as UTF-8 at all. Sent to the database,
either becomes a driver or server error, which the API maps to 503 with
``Retry-After``: a client would retry bad input forever. So every string that
reaches SQL is checked where it enters: request-model fields through
:data:`SafeStr` (a 422 naming the field), headers through :func:`check_header`
(a 400 naming the header).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

from api.errors import ApiError


def problem(value: str) -> str | None:
    """Why PostgreSQL would refuse ``value`` as text, or None when it is storable."""
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (not valid Unicode text)"
    return None


def _storable(value: str) -> str:
    why = problem(value)
    if why is not None:
        raise ValueError(why)
    return value


SafeStr = Annotated[str, AfterValidator(_storable)]
"""A request-model string that is storable text (no NUL, no lone surrogate)."""


def check_header(name: str, value: str, *, printable_ascii: bool = False) -> None:
    """400 ``invalid_header`` when ``value`` holds what the database (or, with
    ``printable_ascii``, the header's own grammar) does not allow."""
    why = problem(value)
    if why is None and printable_ascii and not all(" " <= c <= "~" for c in value):
        why = "must be printable ASCII (0x20 to 0x7E)"
    if why is not None:
        raise ApiError(
            400,
            "invalid_header",
            f"the {name} header {why}",
            f"send {name} as printable ASCII text",
            header=name,
        )
