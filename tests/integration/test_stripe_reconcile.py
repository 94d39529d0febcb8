"""Catching up on missed webhooks: Stripe's event list, applied through the exactly-once path."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs

import httpx

from api import entitlements, subscriptions
from api.stripe_client import StripeBilling
from devkit import stripe_helpers as sh
from watcher import db, keys

CUS, SUB = "cus_TestSync0001", "sub_TestSync0001"


def page(events: list[bytes], more: bool) -> dict[str, object]:
    return {
        "object": "list",
        "url": "/v1/events",
        "has_more": more,
        "data": [json.loads(e) for e in events],
    }


async def test_missed_events_are_applied_once(pool: db.Pool) -> None:
    claim = entitlements.new_secret(entitlements.CLAIM_PREFIX)
    cid = await pool.fetchval(
        db.q("stripe_insert_checkout"),
        keys.sha256(claim),
        "team",
        "late@example.com",
        timedelta(days=7),
    )
    session = {
        "id": "cs_test_sync",
        "object": "checkout.session",
        "customer": CUS,
        "subscription": SUB,
        "client_reference_id": str(cid),
    }
    created = sh.event(
        "customer.subscription.created", sh.subscription(SUB, CUS, "incomplete", tier="team"), sh.T0
    )
    completed = sh.event("checkout.session.completed", session, sh.T0)
    noise = sh.event("charge.succeeded", {"id": "ch_test_1", "object": "charge"}, sh.T0 + 1)
    active = sh.event(
        "customer.subscription.updated", sh.subscription(SUB, CUS, "active", tier="team"), sh.T0 + 5
    )
    pages = [page([active, noise, completed], True), page([created], False)]  # newest first
    seen: list[httpx.Request] = []

    def stripe(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        cursor = parse_qs(request.url.query.decode()).get("starting_after")
        return httpx.Response(200, json=pages[1 if cursor else 0])

    settings = sh.settings(stripe_api_base="http://127.0.0.1:9")
    billing = StripeBilling(settings, transport=httpx.MockTransport(stripe))
    prices = subscriptions.price_tiers(settings)
    since = datetime.now(UTC) - timedelta(hours=72)
    try:
        first = await subscriptions.reconcile(pool, billing, prices, since=since)
        again = await subscriptions.reconcile(pool, billing, prices, since=since)
    finally:
        await billing.aclose()
    assert first == {"applied": 3} and again == {"duplicate": 3}
    query = parse_qs(seen[1].url.query.decode())
    assert query["starting_after"] == [json.loads(completed)["id"]]
    assert query["created[gte]"] == [str(int(since.timestamp()))]
    row = await pool.fetchrow("SELECT status, tier FROM stripe_subscriptions WHERE id = $1", SUB)
    assert (row["status"], row["tier"]) == ("active", "team")
    assert await pool.fetchval("SELECT count(*) FROM stripe_events") == 3  # the charge is not ours
    key = await entitlements.claim_key(pool, claim)
    assert key.key is not None and key.tier == "team"  # the subscriber gets access after all


async def test_stripe_sync_command_against_localstripe(database_url: str, tmp_path: Path) -> None:
    async with sh.localstripe() as upstream:
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "WATCHER_DATA_DIR": str(tmp_path),
            "STRIPE_SECRET_KEY": "sk_test_local",
            "STRIPE_WEBHOOK_SECRET": sh.WEBHOOK_SECRET,
            "STRIPE_PRICE_ID_PRO": sh.PRICES["pro"],
            "STRIPE_API_BASE": upstream,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "watcher",
            "stripe-sync",
            "--hours",
            "1",
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert json.loads(out) == {}  # a fresh Stripe account: nothing missed
