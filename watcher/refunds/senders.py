"""The families' senders and exporters behind one interface (the worker, the API, the CLI).

A :class:`Sender` works one network's refunds: signs the ``requested`` ones (the signed
transaction committed with ``store.mark_signed`` BEFORE it is broadcast), re-checks the
``signed``/``sent`` ones (landed, lost and re-sent with the same bytes, or failed), each
pass bounded. An :class:`Exporter` hands a ``requested`` refund to an outside signer as
an unsigned transaction in one of its ``formats`` (``store.mark_exported``).

Each family registers a builder in :data:`SENDERS` / :data:`EXPORTERS` and a check in
:data:`CAN_SEND` (EVM and Solana). A builder returns None
when the network cannot send (no RPC URL, no key).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from watcher import db, networks
from watcher.refunds import evm, evm_export, solana_export, solana_sender
from watcher.settings import Settings


class Sender(Protocol):
    """Sends one network's refunds from its refund wallet."""

    chain: str
    wallet: str  # the sending address, as stored in refunds.wallet

    async def run_once(self, pool: db.Pool) -> int:
        """One bounded pass (sign due refunds, re-check the signed and sent); work done."""
        ...

    async def aclose(self) -> None:
        """Close what the sender opened (its RPC pool)."""
        ...


class Exporter(Protocol):
    """Unsigned transactions for one network's refunds, for an outside signer."""

    chain: str
    formats: tuple[str, ...]

    async def export(self, pool: db.Pool, refund_id: int, fmt: str) -> dict[str, Any]:
        """The unsigned transaction of refund ``refund_id`` in ``fmt``; marks it exported.
        Raises ``model.Refused`` when the refund cannot be exported (status, format)."""
        ...

    async def aclose(self) -> None: ...


SenderBuilder = Callable[[Settings, str], Sender | None]
ExporterBuilder = Callable[[Settings, str], Exporter | None]

SENDERS: dict[str, SenderBuilder] = {"evm": evm.sender_for, "solana": solana_sender.sender_for}
# Whether a network can send (a key and an RPC URL), without building anything.
CAN_SEND: dict[str, Callable[[Settings, str], bool]] = {
    "evm": evm.can_send,
    "solana": solana_sender.can_send,
}
EXPORTERS: dict[str, ExporterBuilder] = {
    "evm": evm_export.exporter_for,
    "solana": solana_export.exporter_for,
}


def senders(settings: Settings) -> list[Sender]:
    """A sender for every network that can send refunds (its family's key and an RPC URL)."""
    out: list[Sender] = []
    for net in networks.NETWORKS.values():
        build = SENDERS.get(net.family)
        made = build(settings, net.name) if build is not None else None
        if made is not None:
            out.append(made)
    return out


def sending_networks(settings: Settings) -> list[str]:
    """The networks whose refunds the daemon sends."""
    return [
        net.name
        for net in networks.NETWORKS.values()
        if (check := CAN_SEND.get(net.family)) is not None and check(settings, net.name)
    ]


def exporter(settings: Settings, chain: str) -> Exporter | None:
    """The exporter of ``chain``'s family (None: the family or the network cannot export)."""
    build: Mapping[str, ExporterBuilder] = EXPORTERS
    found = build.get(networks.family(chain))
    return found(settings, chain) if found is not None else None
