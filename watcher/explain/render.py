"""The human view of a :class:`~watcher.explain.model.Report`, the same for every family."""

from __future__ import annotations

from watcher import money
from watcher.explain import model


def render(report: model.Report) -> str:
    """One block per transaction; transfers to others summarised; totals in dollars and units."""
    out: list[str] = []
    if not report.receivers:
        out.append("note: no receiving address configured or given (--receiver): nothing is ours")
    for tx in report.transactions:
        out.append(f"{report.chain} tx {tx.tx}  status: {tx.status}")
        shown = [t for t in tx.transfers if t.verdict != "not_ours"]
        out.extend(_line(report, t) for t in shown)
        others = len(tx.transfers) - len(shown)
        if others:
            out.append(f"  ({others} transfer(s) to addresses that are not ours)")
        if not tx.transfers:
            out.append(
                "  nothing moved (the transaction failed)"
                if tx.status == "failed"
                else "  no token transfers"
            )
    total = report.credit_total
    out.append(f"credit total: {money.usd(total)} USDC ({total} base units)")
    out.extend(f"note: {n}" for n in report.notes)
    return "\n".join(out)


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
    return line + (f"\n      events: {'; '.join(t.events)}" if t.events else "")
