"""Backfill progress figures and the heartbeat bookkeeping the watchdog relies on."""

from __future__ import annotations

from structlog.testing import capture_logs

from watcher import progress


def test_backfill_progress_logs_rates_and_eta_at_intervals() -> None:
    bp = progress.BackfillProgress("base", start=1_000, target=10_999, interval=10.0)
    t0 = bp.started
    with capture_logs() as logs:
        assert not bp.advance(2_000, transfers=50, now=t0 + 4)  # before the interval: quiet
        assert bp.advance(2_000, transfers=50, now=t0 + 10)
    assert logs == [
        {
            "event": "backfill_progress",
            "log_level": "info",
            "chain": "base",
            "blocks_done": 4_000,
            "blocks_total": 10_000,
            "blocks_per_second": 400.0,
            "transfers_per_second": 10.0,
            "eta_seconds": 15.0,
        }
    ]


def test_the_last_range_always_logs_and_eta_is_zero() -> None:
    bp = progress.BackfillProgress("solana", start=5, target=14, interval=3600)
    with capture_logs() as logs:
        assert bp.advance(10, now=bp.started + 1)
    assert logs[0]["blocks_done"] == 10 and logs[0]["eta_seconds"] == 0.0


def test_no_rate_yet_means_no_eta() -> None:
    bp = progress.BackfillProgress("ethereum", start=0, target=99)
    assert bp.figures(now=bp.started + 1)["eta_seconds"] is None


def test_beats_decide_ready_and_watchdog() -> None:
    for chain in ("base", "solana"):
        progress.forget(chain)
    assert progress.all_started([])  # no follower: ready at once
    assert not progress.all_started(["base", "solana"])
    progress.beat("base")
    progress.beat("solana")
    now = progress.last_beat("solana")
    assert now is not None
    assert progress.all_started(["base", "solana"])
    assert progress.all_beating(["base", "solana"], within=5, now=now + 4)
    assert not progress.all_beating(["base", "solana"], within=5, now=now + 6)
    progress.forget("base")
    assert not progress.all_started(["base"])
