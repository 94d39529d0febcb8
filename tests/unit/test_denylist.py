"""The deny-list file (watcher/screening/denylist.py): three formats, what matches, reloads."""

from __future__ import annotations

import os
import time
import tracemalloc
from datetime import date
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from watcher import errors
from watcher.screening import denylist

OFAC = Path(__file__).resolve().parents[1] / "fixtures" / "ofac"


def test_a_plain_list_matches_evm_in_any_case_and_solana_exactly() -> None:
    listed = denylist.DenyList.load(OFAC / "denylist.txt")
    assert listed.count == 3 and listed.label == "deny-list denylist.txt"
    assert listed.lookup("0x" + "AA" * 20) == "deny-list denylist.txt line 3"
    assert listed.lookup("0x" + "aa" * 20) == "deny-list denylist.txt line 3"
    assert listed.lookup("0x" + "bb" * 20) == "deny-list denylist.txt line 5"  # comment after
    solana = "MadeUpSo1anaPayerForTestscccccccccccccccccc"
    assert listed.lookup(solana) == "deny-list denylist.txt line 6"
    assert listed.lookup(solana.upper()) is None  # base58 is case-sensitive
    assert listed.lookup("0x" + "cc" * 20) is None
    assert listed.source_date == date(2026, 11, 28)  # the newest date its comments give


def test_a_malformed_line_names_the_variable_the_file_and_the_line(tmp_path: Path) -> None:
    path = tmp_path / "deny.txt"
    path.write_text("# ok\n0x" + "11" * 20 + "\n\n0x1234 not an address\n")
    with pytest.raises(errors.ConfigError) as caught:
        denylist.DenyList.load(path)
    (problem,) = caught.value.problems
    assert problem.startswith(f"X402_DENYLIST_FILE: {path} line 4: '0x1234 not an address'")


def test_a_missing_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match=r"X402_DENYLIST_FILE: .*nope\.txt cannot be read"):
        denylist.DenyList.load(tmp_path / "nope.txt")


def test_sdn_advanced_xml_digital_currency_features_with_entry_and_name() -> None:
    listed = denylist.DenyList.load(OFAC / "SDN_ADVANCED.XML")
    assert listed.label == "OFAC SDN (SDN_ADVANCED.XML)"
    assert listed.lookup("0x5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a") == (
        "OFAC SDN (SDN_ADVANCED.XML) entry 12345 'EXAMPLE MIXER LTD', ETH"
    )
    assert listed.lookup("0x6B6B6B6B6B6B6B6B6B6B6B6B6B6B6B6B6B6B6B6B") == (
        "OFAC SDN (SDN_ADVANCED.XML) entry 23456 'DOE Jane', USDC"
    )
    assert listed.lookup("ExampLe5o1anaAddre55NotRea1aaaaaaaaaaaaaaa") == (
        "OFAC SDN (SDN_ADVANCED.XML) entry 23456 'DOE Jane', SOL"
    )
    # Every currency's entry is kept (the XBT one counts); a birthdate feature is not one.
    assert listed.count == 4
    assert listed.source_date == date(2026, 11, 24)  # DateOfIssue


def test_sdn_csv_remarks_entries_with_entry_and_name() -> None:
    listed = denylist.DenyList.load(OFAC / "sdn.csv")
    assert listed.label == "OFAC SDN (sdn.csv)"
    assert listed.lookup("0x7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c") == (
        "OFAC SDN (sdn.csv) entry 45678 'MADEUP EXCHANGE LLC', ETH"
    )
    assert listed.lookup("0x8D8D8D8D8D8D8D8D8D8D8D8D8D8D8D8D8D8D8D8D") is not None  # "alt." one
    assert listed.lookup("0x9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e") == (
        "OFAC SDN (sdn.csv) entry 56789 'ROE, Richard', USDT"
    )
    assert listed.lookup("MadeUpSo1anaAddressForTestsbbbbbbbbbbbbbbb") is not None
    assert listed.count == 6  # XBT and TRX entries counted, never matched by a payer
    assert listed.source_date is None


def test_a_csv_row_with_too_few_columns_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "sdn.csv"
    path.write_text('1,"A","-0-","X","-0-","-0-","-0-","-0-","-0-","-0-","-0-","-0-"\n2,"B"\n')
    with pytest.raises(errors.ConfigError, match=r"line 2: 2 columns where sdn\.csv has 12"):
        denylist.DenyList.load(path)


def test_broken_xml_is_refused_naming_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "SDN_ADVANCED.XML"
    path.write_text((OFAC / "SDN_ADVANCED.XML").read_text()[:3000])
    with pytest.raises(errors.ConfigError, match=r"X402_DENYLIST_FILE: .* not well-formed XML"):
        denylist.DenyList.load(path)


def _big_xml(path: Path, parties: int) -> None:
    head, _, rest = (OFAC / "SDN_ADVANCED.XML").read_text().partition("<DistinctParties>")
    party = rest[: rest.index("</DistinctParty>") + len("</DistinctParty>")]
    with open(path, "w") as f:
        f.write(head + "<DistinctParties>")
        for n in range(parties):
            f.write(
                party.replace("12345", str(100_000 + n)).replace(
                    "0x5a5A5a5a5A5a5a5A5a5a5a5A5a5a5a5A5a5a5a5A", "0x" + f"{n:040x}"
                )
            )
        f.write("</DistinctParties></Sanctions>")


def test_a_large_sdn_advanced_xml_is_streamed_not_held_whole(tmp_path: Path) -> None:
    path = tmp_path / "SDN_ADVANCED.XML"
    _big_xml(path, 3500)
    size = path.stat().st_size
    tracemalloc.start()
    try:
        listed = denylist.DenyList.load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert listed.count == 2 * 3500  # an ETH and an XBT entry per party
    assert listed.lookup("0x" + f"{3499:040x}") is not None
    # The tree of a whole file takes several times its size; streaming keeps the entries.
    assert size > 5_000_000 and peak < size / 2, (size, peak)


def _rewrite(path: Path, text: str) -> None:
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))  # a visible change


def test_refresh_reloads_a_changed_file_and_keeps_the_old_list_on_a_broken_one(
    tmp_path: Path,
) -> None:
    one, two = "0x" + "01" * 20, "0x" + "02" * 20
    path = tmp_path / "deny.txt"
    path.write_text(one + "\n")
    listed = denylist.DenyList.load(path)
    assert listed.refresh() is False  # unchanged
    _rewrite(path, two + "\n")
    assert listed.refresh() is True
    assert listed.lookup(one) is None and listed.lookup(two) is not None
    _rewrite(path, two + "\nnot-an-address\n")
    with capture_logs() as logs:
        assert listed.refresh() is False
    assert listed.lookup(two) is not None  # the old list stays in use
    (failed,) = [e for e in logs if e["event"] == "denylist_reload_failed"]
    assert "line 2" in failed["problem"] and failed["log_level"] == "error"


def test_lookup_notices_a_changed_file_and_reloads_it(tmp_path: Path) -> None:
    one, two = "0x" + "03" * 20, "0x" + "04" * 20
    path = tmp_path / "deny.txt"
    path.write_text(one + "\n")
    listed = denylist.DenyList.load(path)
    _rewrite(path, one + "\n" + two + "\n")
    deadline = time.monotonic() + 10
    while listed.lookup(two) is None:  # looked at once a second, parsed in a thread
        assert time.monotonic() < deadline, "the changed file was never reloaded"
        time.sleep(0.1)
    assert listed.count == 2


def test_the_same_test_fails_for_a_file_parsed_whole(tmp_path: Path) -> None:
    """The bound above is one a whole-tree parse breaks (so the test can fail)."""
    import xml.etree.ElementTree as ET

    path = tmp_path / "SDN_ADVANCED.XML"
    _big_xml(path, 600)
    tracemalloc.start()
    try:
        tree = ET.parse(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert tree.getroot() is not None and peak > path.stat().st_size / 2


def test_a_csv_in_windows_1252_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "SDN.CSV"
    row = (
        '7,"CAF\xc9 S.A.","-0-","CYBER2","-0-","-0-","-0-","-0-","-0-","-0-","-0-",'
        '"Digital Currency Address - ETH 0x' + "ef" * 20 + ';"\r\n'
    )
    path.write_bytes(row.encode("cp1252"))
    listed = denylist.DenyList.load(path)
    found = listed.lookup("0x" + "EF" * 20)
    assert found is not None and found.startswith("OFAC SDN (sdn.csv) entry 7 'CAF")


def test_a_removed_file_keeps_the_list_and_is_said_once(tmp_path: Path) -> None:
    one = "0x" + "05" * 20
    path = tmp_path / "deny.txt"
    path.write_text(one + "\n")
    listed = denylist.DenyList.load(path)
    path.unlink()
    with capture_logs() as logs:
        assert listed.refresh() is False
        assert listed.refresh() is False
    assert [e["event"] for e in logs] == ["denylist_reload_failed"]
    assert listed.lookup(one) is not None
    path.write_text(one + "\n" + "0x" + "06" * 20 + "\n")  # back: read again
    assert listed.refresh() is True and listed.count == 2
