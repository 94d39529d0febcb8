"""Prometheus objects, and nothing else. Names follow the official conventions.

Labels come from small fixed sets: ``chain`` (a network's name in ``watcher.networks``),
``endpoint`` (an RPC URL reduced to scheme://host:port by
``keys.redact_url``: keys in paths never reach a label), ``method`` (the
JSON-RPC methods we call), ``state``/``outcome`` (enumerations below).
Alert rules and the dashboard depend on these names: rename only with them.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

# ---- process ------------------------------------------------------------------------

BUILD = Info("watcher_build", "Version of the running watcher")
UP = Gauge("watcher_up", "1 while the daemon runs; 0 while it shuts down")
DB_UP = Gauge("watcher_db_up", "1 when the last database health check succeeded")
FOLLOWER_RUNNING = Gauge(
    "watcher_follower_running", "1 while this process runs the chain's follower", ["chain"]
)
FOLLOWER_CRASHES = Counter(
    "watcher_follower_crashes_total", "Follower tasks that ended with an error", ["chain"]
)

# ---- chain following (per chain) ------------------------------------------------------

HEAD_BLOCK = Gauge("watcher_chain_head_block", "Best head seen (block or slot)", ["chain"])
CURSOR_BLOCK = Gauge(
    "watcher_chain_cursor_block", "Last block or slot fully processed and committed", ["chain"]
)
LAG_BLOCKS = Gauge("watcher_chain_lag_blocks", "Head minus cursor", ["chain"])
# The registry's typical block time (slot time on Solana), set when a follower starts:
# the HeadLagHigh and NoNewBlock alerts turn blocks into seconds with it, so a new
# network needs no threshold of its own.
CHAIN_BLOCK_SECONDS = Gauge(
    "watcher_chain_block_seconds",
    "Typical time between blocks (slots on Solana) of a followed network, from the registry",
    ["chain"],
)
LAST_BLOCK_TIMESTAMP = Gauge(
    "watcher_chain_last_block_timestamp_seconds",
    "Unix time at which the follower last saw a new head",
    ["chain"],
)
PAYMENTS = Counter(
    "watcher_payments_total",
    "Payments entering a state (observed, credited, orphaned, below_minimum, claimed, "
    "held, rejected)",
    ["chain", "state"],
)
# Holds (issue 16): refreshed by the cleanup job from the table (the counter above
# cannot say how many are still waiting once an operator released some).
PAYMENTS_HELD = Gauge("watcher_payments_held", "Payments held for review right now", ["chain"])
PAYMENTS_HELD_OLDEST = Gauge(
    "watcher_payments_held_oldest_seconds",
    "How long the oldest payment held for review has waited (0: none)",
    ["chain"],
)
HOLDS_REVIEWED = Counter(
    "watcher_holds_reviewed_total",
    "Held payments an operator released or rejected",
    ["chain", "outcome"],
)
CREDITED_BASE_UNITS = Counter(
    "watcher_credited_base_units_total", "USDC credited, in base units (1e-6 USDC)", ["chain"]
)
REORGS = Counter("watcher_reorgs_total", "Chain reorganisations detected", ["chain"])
REORG_DEPTH = Histogram(
    "watcher_reorg_depth_blocks",
    "Depth of detected reorganisations",
    ["chain"],
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64, 128),
)
DEEP_REORGS = Counter(
    "watcher_deep_reorgs_total", "Reorganisations deeper than the confirmation depth", ["chain"]
)
CREDITED_REORGED = Counter(
    "watcher_credited_reorged_total",
    "Credited payments whose block later left the canonical chain (flagged, never deleted)",
    ["chain"],
)
CREDITED_RELANDED = Counter(
    "watcher_credited_relanded_total",
    "Flagged payments whose transfer was included again and confirmed (flag cleared)",
    ["chain"],
)
CREDIT_DELAY = Histogram(
    "watcher_credit_delay_seconds",
    "Time from seeing the confirming block (or finalization) to committing the credit",
    ["chain"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
WS_RECONNECTS = Counter(
    "watcher_ws_reconnects_total", "Websocket subscription reconnects", ["chain"]
)

# ---- RPC endpoints (per chain and endpoint) ---------------------------------------------

RPC_REQUESTS = Counter(
    "watcher_rpc_requests_total",
    "JSON-RPC requests by outcome (ok, rpc_error, rate_limited, timeout, transport, refused)",
    ["chain", "endpoint", "method", "outcome"],
)
RPC_LATENCY = Histogram(
    "watcher_rpc_request_duration_seconds",
    "JSON-RPC request latency",
    ["chain", "endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RPC_HEALTHY = Gauge(
    "watcher_rpc_endpoint_healthy",
    "1 when the endpoint is usable, 0 when demoted",
    ["chain", "endpoint"],
)
RPC_CIRCUIT_STATE = Gauge(
    "watcher_rpc_circuit_state",
    "Circuit breaker: 0 closed, 1 half-open, 2 open",
    ["chain", "endpoint"],
)

# ---- API and payments on the payer's path -------------------------------------------------

PAYMENT_REQUIRED = Counter("watcher_api_payment_required_total", "402 answers by route", ["route"])
PAYMENT_VERIFICATIONS = Counter(
    "watcher_payment_verifications_total",
    "verify-payment and claim lookups by outcome (credited, pending, failed, not_found, ...)",
    ["outcome"],
)
TOKENS_ISSUED = Counter("watcher_tokens_issued_total", "Access tokens issued", ["chain"])
GATEWAY_UPSTREAM_FAILURES = Counter(
    "watcher_gateway_upstream_failures_total",
    "Gateway calls the upstream failed (5xx, unreachable, timeout) by route and rail",
    ["route", "rail"],
)
GATEWAY_STREAMED = Counter(
    "watcher_gateway_streamed_total",
    "Gateway answers relayed as a stream (not read whole) by route",
    ["route"],
)
METERED_CALLS = Counter(
    "watcher_metered_calls_total",
    "Paid calls by outcome (served, refused, refunded, replayed)",
    ["outcome"],
)
STRIPE_WEBHOOKS = Counter(
    "watcher_stripe_webhooks_total",
    "Stripe webhook deliveries by outcome "
    "(applied, stale, ignored, unmatched, duplicate, bad_signature, failed)",
    ["outcome"],
)
API_RATE_LIMITED = Counter(
    "watcher_api_rate_limited_total", "429 answers by rate-limit bucket", ["bucket"]
)
INVOICES_CREATED = Counter("watcher_invoices_created_total", "Invoices created", ["chain"])

# ---- Stripe rail (api/stripe_client.py) --------------------------------------------------

STRIPE_API_CALLS = Counter(
    "watcher_stripe_api_requests_total",
    "Stripe API calls (customer, checkout, portal, events) by outcome "
    "(ok, retried, unavailable, rejected, card_declined, breaker_open)",
    ["call", "outcome"],
)
STRIPE_CIRCUIT_OPEN = Gauge(
    "watcher_stripe_circuit_open", "1 while the Stripe circuit breaker refuses calls"
)

# ---- standard x402 (exact, EIP-3009) ------------------------------------------------

X402_SETTLEMENTS = Counter(
    "watcher_x402_settlements_total",
    "x402 authorization settlements by outcome (settled, failed, unfunded, unknown)",
    ["chain", "outcome"],
)

# ---- webhook delivery (watcher/webhooks/worker.py) ------------------------------------

WEBHOOK_ATTEMPTS = Counter(
    "watcher_webhook_attempts_total",
    "Webhook delivery attempts by outcome (succeeded, http_status, timeout, network)",
    ["outcome"],
)
WEBHOOK_DELIVERY_LATENCY = Histogram(
    "watcher_webhook_delivery_latency_seconds",
    "Time from an event's creation to its successful delivery (retries included)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 86400),
)
WEBHOOK_PENDING = Gauge(
    "watcher_webhook_pending_deliveries",
    "Webhook deliveries not yet delivered, failed or cancelled",
)
WEBHOOK_ENDPOINTS_FAILING = Gauge(
    "watcher_webhook_endpoints_failing",
    "Enabled webhook endpoints whose last attempt failed (a failing streak is running)",
)

# ---- scheduled jobs (watcher/jobs.py; only the jobs leader runs them) --------------------
# The label is ``name``, not ``job``: Prometheus attaches its own ``job`` label to every
# scraped series and would rename ours to ``exported_job``.

JOBS_LEADER = Gauge("watcher_jobs_leader", "1 while this process holds the scheduled jobs' lock")
JOB_INTERVAL = Gauge(
    "watcher_job_interval_seconds", "Seconds between runs of an enabled scheduled job", ["name"]
)
JOB_LAST_SUCCESS = Gauge(
    "watcher_job_last_success_timestamp_seconds",
    "Unix time of the job's last successful run in this process (its start until then)",
    ["name"],
)
JOB_RUNS = Counter(
    "watcher_job_runs_total",
    "Scheduled job runs by outcome (ok, failed, timeout)",
    ["name", "outcome"],
)
JOB_DURATION = Histogram(
    "watcher_job_duration_seconds",
    "Time a scheduled job run took, whatever its outcome",
    ["name"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
)
