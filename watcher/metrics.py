"""Prometheus objects, and nothing else. Names follow the official conventions."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Info

BUILD = Info("watcher_build", "Version of the running watcher")
UP = Gauge("watcher_up", "1 while the daemon runs; 0 while it shuts down")
DB_UP = Gauge("watcher_db_up", "1 when the last database health check succeeded")
FOLLOWER_RUNNING = Gauge(
    "watcher_follower_running", "1 while this process runs the chain's follower", ["chain"]
)
FOLLOWER_CRASHES = Counter(
    "watcher_follower_crashes_total", "Follower tasks that ended with an error", ["chain"]
)
