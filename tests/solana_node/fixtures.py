"""The recorded mainnet answers vendored in ``tests/fixtures/mainnet`` (never edited)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MAINNET = Path(__file__).resolve().parents[1] / "fixtures" / "mainnet"


def solana_fixture_path(name: str) -> Path:
    return MAINNET / "solana" / name


def load_solana_fixture(name: str) -> Any:
    return json.loads(solana_fixture_path(name).read_text(encoding="utf-8"))


DURABLE_NONCE = "explorer_usdc_transferChecked_durable_nonce.json"
ORCA_CPI = "keyapp_orca_transitive_swap_usdc_via_cpi.json"
ORCA_FAILED = "keyapp_orca_swap_failed_slippage.json"
