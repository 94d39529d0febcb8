"""The human view of a :class:`~watcher.explain.model.Report`, the same for every family.

The verdict comes first: what credits and its total, what reached us without
crediting, how many transfers went to others; then the ledger's states, then the
transactions. A saved block holds hundreds of transfers of which one may be
ours, so by default only what is addressed to us is listed (a report on a single
transaction always shows that transaction); ``--all`` lists everything.
Amounts follow :mod:`watcher.money`: USDC in dollars, base units beside the total.
"""

from __future__ import annotations

from collections import Counter

from watcher import money
from watcher.explain import model


def render(report: model.Report, *, show_all: bool = False) -> str:
    """The verdict and totals, the ledger's states, then the transactions; notes last."""
    summary = report.summary()
    out = [_headline(summary)]
    if not report.receivers:
        out.append("note: no receiving address configured or given (--receiver): nothing is ours")
    if summary.ledger_read:
        out.append(f"ledger: {_counts(summary.ledger) or 'nothing to us to look up'}")
        out.extend(_waiting(summary.ledger))
    listed = [
        tx
        for tx in report.transactions
        if show_all or len(report.transactions) == 1 or any(report.to_us(t) for t in tx.transfers)
    ]
    if len(report.transactions) > 1:
        out.append(_scope(report, len(listed), show_all))
    for tx in listed:
        out.extend(_transaction(report, tx, show_all))
    out.extend(f"note: {n}" for n in report.notes)
    return "\n".join(out)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{n} {name}" for name, n in sorted(counter.items()))


def _headline(s: model.Summary) -> str:
    """``credit total: 1800.00 USDC (1800000000 base units) from 1 payment to us; ...``."""
    total = f"{money.usd(s.credit_total)} USDC ({s.credit_total} base units)"
    missed = sum(s.not_credited.values())
    why = f" ({_counts(s.not_credited)})" if missed else ""
    return (
        f"credit total: {total} from {_plural(s.credits, 'payment')} to us; "
        f"{missed} to us not credited{why}; "
        f"{_plural(s.others, 'transfer')} to others ignored"
    )


def _waiting(ledger: Counter[str]) -> list[str]:
    """What the chain would credit but the ledger keeps back (issue 16): said plainly,
    since the headline judges the transfers by the chain's rules alone."""
    out = []
    if ledger.get("held"):
        out.append(
            f"held for review: {_plural(ledger['held'], 'payment')}, not credited and not "
            "claimable until an operator releases it (watcher holds release ID) or rejects it"
        )
    if ledger.get("rejected"):
        out.append(
            f"rejected: {_plural(ledger['rejected'], 'payment')}, never credited "
            "(refundable: watcher refunds)"
        )
    return out


def _scope(report: model.Report, listed: int, show_all: bool) -> str:
    txs = report.transactions
    failed = sum(1 for tx in txs if tx.status == "failed")
    moved = sum(len(tx.transfers) for tx in txs)
    head = f"{report.chain}: {_plural(len(txs), 'transaction')}"
    head += f" ({failed} failed), " if failed else ", "
    head += f"{_plural(moved, 'token transfer')}; "
    if show_all:
        return head + "all listed"
    if not listed:
        return head + "none to us (--all lists them)"
    return head + f"listed: the {_plural(listed, 'transaction')} to us (--all lists every one)"


def _transaction(report: model.Report, tx: model.Tx, show_all: bool) -> list[str]:
    out = [f"{report.chain} tx {tx.tx}  status: {tx.status}"]
    shown = [t for t in tx.transfers if show_all or report.to_us(t) or t.refunds]
    out.extend(_line(report, t) for t in shown)
    others = len(tx.transfers) - len(shown)
    if others:
        out.append(f"  ({_plural(others, 'transfer')} to others: --all lists them)")
    if not tx.transfers:
        out.append(
            "  nothing moved (the transaction failed)"
            if tx.status == "failed"
            else "  no token transfers"
        )
    return out


def _line(report: model.Report, t: model.Transfer) -> str:
    show = report.show_address
    if t.token == report.usdc:
        amount = f"{money.usd(t.amount)} USDC"
    else:  # another token's decimals are not ours to know: its base units as they are
        amount = f"{t.amount} base units of token {show(t.token) if t.token else '?'}"
    extra = f"  [ledger: {t.state}]" if t.state else ""
    if t.confirmations is not None:
        extra += f"  [{t.confirmations} confirmations]"
    frm = show(t.from_address) if t.from_address else "?"
    to = show(t.to_address) if t.to_address else "?"
    line = f"  {report.index_label} {t.index}: {amount} {frm} -> {to}  => {t.verdict}{extra}"
    line += f"\n      {t.reason}" if t.reason else ""
    line += _risk(t)
    line += "".join(f"\n      {r}" for r in t.refunds or ())
    return line + (f"\n      events: {'; '.join(t.events)}" if t.events else "")


def _risk(t: model.Transfer) -> str:
    """The screening's verdict when a rule fired, and the review (issue 16)."""
    out = ""
    if t.risk is not None and t.risk.get("rules"):
        out += f"\n      risk: score {t.risk['score']}"
        for r in t.risk["rules"]:
            out += f"\n        {r['rule']} (weight {r['weight']}): {r['why']}"
    if t.review is not None:
        out += f"\n      review: by {t.review['by']} at {t.review['at']}: {t.review['note']}"
    return out
