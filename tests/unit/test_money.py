"""The one money rule: base units as plain integers, dollars with 2 to 6 decimals."""

from __future__ import annotations

from decimal import Decimal

import pytest

from watcher import money, settings


@pytest.mark.parametrize(
    ("units", "shown"),
    [
        (0, "0.00"),
        (1, "0.000001"),
        (907, "0.000907"),
        (100_000, "0.10"),
        (1_000_000, "1.00"),
        (1_500_000, "1.50"),
        (2_350_000, "2.35"),
        (1_234_567, "1.234567"),
        (1_800_000_000, "1800.00"),
        (-2_500_000, "-2.50"),
        (2**256 - 1, f"{(2**256 - 1) // 10**6}.{(2**256 - 1) % 10**6:06d}"),
    ],
)
def test_usd_has_two_to_six_decimals_and_no_exponent(units: int, shown: str) -> None:
    assert money.usd(units) == shown
    assert money.usd(Decimal(units)) == shown
    assert "E" not in shown and "," not in shown


def test_a_numeric_decimal_leaves_as_a_plain_integer() -> None:
    # asyncpg hands numeric(78,0) back in this form; str() of it was "1.00E+6"
    assert str(Decimal("1.00E+6")) == "1.00E+6"
    assert money.units_text(Decimal("1.00E+6")) == "1000000"
    assert money.units_text(Decimal("1000000")) == "1000000"
    assert money.units_text(1_000_000) == "1000000"
    assert money.units_text("2500000") == "2500000"
    assert money.usd(Decimal("1.00E+6")) == "1.00"
    assert money.units_text(Decimal(2**256 - 1)) == str(2**256 - 1)


@pytest.mark.parametrize("bad", [Decimal("1.5"), Decimal("NaN"), Decimal("Infinity"), "0.1", "x"])
def test_fractions_of_a_base_unit_are_not_amounts(bad: Decimal | str) -> None:
    with pytest.raises(ValueError):
        money.units_text(bad)
    with pytest.raises(ValueError):
        money.usd(bad)


@pytest.mark.parametrize(
    ("units", "shown"), [(500_000, "0.5"), (1_000_000, "1"), (1, "0.000001"), (0, "0")]
)
def test_solana_pay_amounts_use_the_fewest_digits(units: int, shown: str) -> None:
    assert money.token_amount(units) == shown
    assert money.token_amount(Decimal(units).normalize()) == shown  # "1E+6" too


def test_a_bool_is_not_an_amount() -> None:
    with pytest.raises(ValueError):
        money.as_units(True)


@pytest.mark.parametrize(
    ("usd", "units"),
    [("0.10", 100_000), ("1", 1_000_000), ("0.000001", 1), ("2.35", 2_350_000), ("0", 0)],
)
def test_usd_to_units_is_exact(usd: str, units: int) -> None:
    assert money.usd_to_units(Decimal(usd)) == units
    assert money.usd(units) == money.usd(money.usd_to_units(Decimal(usd)))


@pytest.mark.parametrize("bad", ["0.0000001", "NaN", "Infinity", "1e-7"])
def test_usd_to_units_refuses_what_is_not_whole_units(bad: str) -> None:
    with pytest.raises(ValueError):
        money.usd_to_units(Decimal(bad))


def test_a_huge_amount_converts_without_rounding() -> None:
    # 36 digits: more than Decimal's default 28-digit context would keep
    assert money.usd_to_units(Decimal("123456789012345678901234567890.123456")) == (
        123456789012345678901234567890123456
    )


def test_settings_still_exposes_the_moved_names() -> None:
    assert settings.usd_to_units is money.usd_to_units
    assert settings.USDC_UNIT == money.USDC_UNIT == 10**6
