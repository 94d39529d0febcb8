"""`watcher doctor`'s screening rows (watcher/doctor/screening.py): the deny-list file loads
and is fresh, the sanctions oracle answers (a mock of it on anvil)."""

from __future__ import annotations

import asyncio
import os
from datetime import date
from pathlib import Path
from typing import Any

from eth_account import Account

from devkit.anvil import Anvil, calldata, deploy_sanctions_oracle
from watcher import doctor
from watcher.doctor import report
from watcher.doctor import screening as screening_rows
from watcher.doctor.report import Check
from watcher.settings import Settings

OFAC = Path(__file__).resolve().parents[1] / "fixtures" / "ofac"


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


def _rows(rows: list[Check], group: str = "screening") -> dict[str, Check]:
    return {r.name: r for r in rows if r.group == group}


async def test_a_loaded_fresh_deny_list_is_two_ok_rows() -> None:
    s = _settings(x402_denylist_file=str(OFAC / "SDN_ADVANCED.XML"))
    found = _rows(await screening_rows.denylist_rows(s, today=date(2026, 12, 1)))
    assert found["deny-list file"].status == "ok"
    assert "OFAC SDN (SDN_ADVANCED.XML), 4 entries" in found["deny-list file"].value
    assert found["deny-list age"].status == "ok"
    assert found["deny-list age"].value == "issued 2026-11-24, 7 days ago"


async def test_a_stale_deny_list_is_a_warning_saying_how_to_refresh_it() -> None:
    s = _settings(x402_denylist_file=str(OFAC / "SDN_ADVANCED.XML"))
    age = _rows(await screening_rows.denylist_rows(s, today=date(2027, 1, 24)))["deny-list age"]
    assert age.status == "warn"
    assert "61 days ago (more than X402_DENYLIST_MAX_AGE_DAYS=30)" in age.value
    assert "SDN_ADVANCED.XML" in age.fix
    never = _settings(
        x402_denylist_file=str(OFAC / "SDN_ADVANCED.XML"), x402_denylist_max_age_days=0
    )
    rows = await screening_rows.denylist_rows(never, today=date(2027, 1, 24))
    assert _rows(rows)["deny-list age"].status == "ok"


async def test_a_plain_list_without_a_date_is_judged_by_its_mtime(tmp_path: Path) -> None:
    path = tmp_path / "deny.txt"
    path.write_text("0x" + "12" * 20 + "\n")
    old = 1_700_000_000  # 14 Nov 2023
    os.utime(path, (old, old))
    rows = _rows(await screening_rows.denylist_rows(_settings(x402_denylist_file=str(path))))
    assert rows["deny-list file"].status == "ok" and "1 entries" in rows["deny-list file"].value
    assert rows["deny-list age"].status == "warn"
    assert rows["deny-list age"].value.startswith("file written 2023-11-14")


async def test_a_broken_deny_list_fails_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "deny.txt"
    path.write_text("0x" + "12" * 20 + "\nnope\n")
    rows = await asyncio.wait_for(
        doctor.examine(_settings(x402_denylist_file=str(path)), seconds=2.0), 60
    )
    (row,) = _rows(rows).values()
    assert row.name == "deny-list file" and row.status == "fail"
    assert "X402_DENYLIST_FILE" in row.value and "line 2" in row.value
    assert not report.ready(rows, _settings(watcher_env="production"))


async def test_without_the_settings_there_are_no_screening_rows() -> None:
    rows = await asyncio.wait_for(doctor.examine(_settings(), seconds=2.0), 60)
    assert _rows(rows) == {}


def _oracle_settings(anvil: Anvil, contract: str) -> Settings:
    return _settings(
        x402_sanctions_oracle=True,
        x402_base_rpc_url=anvil.url,
        x402_base_chain_id=31337,
        x402_base_sanctions_oracle_address=contract,
        x402_ethereum_rpc_url=None,
    )


async def test_the_oracle_row_asks_the_zero_address_on_each_oracle_network(anvil: Anvil) -> None:
    contract = await deploy_sanctions_oracle(anvil, [Account.create().address])
    rows = _rows(await asyncio.wait_for(doctor.examine(_oracle_settings(anvil, contract)), 60))
    assert list(rows) == ["base sanctions oracle"]
    assert rows["base sanctions oracle"].status == "ok"
    assert contract in rows["base sanctions oracle"].value

    await anvil.send(anvil.accounts[0], contract, calldata("setBroken(bool)", True))
    rows = _rows(await asyncio.wait_for(doctor.examine(_oracle_settings(anvil, contract)), 60))
    broken = rows["base sanctions oracle"]
    assert broken.status == "fail" and "reverted" in broken.value
    assert "X402_BASE_SANCTIONS_ORACLE_ADDRESS" in broken.fix and "held" in broken.fix


async def test_an_oracle_address_without_a_contract_fails(anvil: Anvil) -> None:
    nothing = "0x" + "00" * 19 + "77"
    rows = _rows(await asyncio.wait_for(doctor.examine(_oracle_settings(anvil, nothing)), 60))
    row = rows["base sanctions oracle"]
    assert row.status == "fail" and "answered '0x'" in row.value


async def test_the_oracle_on_with_nothing_to_ask_is_a_warning() -> None:
    rows = _rows(
        await asyncio.wait_for(
            doctor.examine(_settings(x402_sanctions_oracle=True), seconds=2.0), 60
        )
    )
    assert rows["sanctions oracle"].status == "warn"
    assert "X402_<NETWORK>_SANCTIONS_ORACLE_ADDRESS" in rows["sanctions oracle"].fix
