"""The ``x-admin-operator`` header every admin request carries (watcher/operator.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Header

from api.errors import ApiError
from watcher import operator


async def require_operator(
    x_admin_operator: Annotated[str | None, Header(alias="x-admin-operator")] = None,
) -> str:
    """The operator name of an admin request; 400 with the fix when missing or malformed."""
    name = operator.validate(x_admin_operator)
    if name is not None:
        return name
    if x_admin_operator is None or not x_admin_operator.strip():
        raise ApiError(
            400,
            "operator_required",
            "admin requests must say who is acting: the x-admin-operator header is missing",
            "send x-admin-operator: <your name> with the admin key (it is recorded with "
            "the action; one shared admin key cannot tell people apart)",
        )
    raise ApiError(
        400,
        "operator_invalid",
        "the x-admin-operator header is not an operator name",
        f"use {operator.RULE}",
    )
