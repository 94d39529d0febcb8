"""Where the recorded mainnet answers live: ``shared/fixtures/mainnet`` beside the repo."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def mainnet_dir() -> Path:
    env = os.environ.get("WATCHER_FIXTURES_DIR")
    return Path(env) if env else REPO.parent / "shared" / "fixtures" / "mainnet"


def solana_fixture_path(name: str) -> Path:
    return mainnet_dir() / "solana" / name


def load_solana_fixture(name: str) -> Any:
    return json.loads(solana_fixture_path(name).read_text(encoding="utf-8"))


DURABLE_NONCE = "explorer_usdc_transferChecked_durable_nonce.json"
ORCA_CPI = "keyapp_orca_transitive_swap_usdc_via_cpi.json"
ORCA_FAILED = "keyapp_orca_swap_failed_slippage.json"
