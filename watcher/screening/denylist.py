"""The deny-list file (``X402_DENYLIST_FILE``): addresses whose money is held, read from disk.

Three formats, told apart by content, not by name:

* a plain list: one address a line, ``#`` starts a comment, blank lines are skipped;
  a line that is neither an EVM nor a Solana address is an error naming the line;
* OFAC's ``SDN_ADVANCED.XML``: every ``Feature`` whose ``FeatureType`` reads
  "Digital Currency Address - XXX" (its ``VersionDetail`` is the address), with the
  party's ``FixedRef`` and primary name; streamed with ``iterparse`` and each party
  cleared once read, so the ~100 MB file is never held whole;
* OFAC's ``sdn.csv``: the remarks column's "Digital Currency Address - XXX <address>;"
  entries, with the row's ``ent_num`` and name.

Entries of every currency are kept (``count``), but only EVM-shaped (0x + 40 hex,
compared lowercased) and Solana-shaped (base58, 32-44 characters, compared exactly)
ones can match a payer. ``lookup`` notices a changed file (mtime and size, looked at
most once a second) and reloads it in a thread, answering from the old list meanwhile;
``refresh`` reloads at once. A broken new file keeps the old list and logs
``denylist_reload_failed``.
"""

from __future__ import annotations

import csv
import os
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import structlog

from watcher import errors

log = structlog.get_logger(__name__)

VARIABLE = "X402_DENYLIST_FILE"
CHECK_EVERY_SECONDS = 1.0
_GONE = (-1, -1)  # the stamp of a file that could not be looked at
_EVM = re.compile(r"0x[0-9a-fA-F]{40}")
_SOLANA = re.compile(r"[1-9A-HJ-NP-Za-km-z]{32,44}")
_DCA = "Digital Currency Address - "
_CSV_DCA = re.compile(r"Digital Currency Address - ([A-Za-z0-9]+)[ \t]+([^\s;]+)")
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
XML_LABEL = "OFAC SDN (SDN_ADVANCED.XML)"
CSV_LABEL = "OFAC SDN (sdn.csv)"


def matchable(address: str) -> bool:
    """Whether ``address`` has a shape a payer on our networks can have."""
    return bool(_EVM.fullmatch(address) or _SOLANA.fullmatch(address))


def normalize(address: str) -> str:
    """The key an address is compared by: EVM lowercased, anything else exactly."""
    return address.lower() if _EVM.fullmatch(address) else address


@dataclass(frozen=True, slots=True)
class Parsed:
    """One reading of the file: normalized address -> where it is listed."""

    entries: dict[str, str]
    count: int  # entries of every currency (a BTC address counts, but never matches)
    source_date: date | None
    label: str  # which format it was


class DenyList:
    """A deny-list file, loaded; satisfies ``core.AddressList``."""

    def __init__(self, path: Path, parsed: Parsed, stamp: tuple[int, int]) -> None:
        self.path = path
        self._parsed = parsed
        self._stamp = stamp
        self._checked = time.monotonic()
        self._lock = threading.Lock()
        self._reloading: threading.Thread | None = None
        self.loaded_at = datetime.now(UTC)

    @classmethod
    def load(cls, path: Path | str) -> DenyList:
        """Read ``path``; raises ``errors.ConfigError`` naming X402_DENYLIST_FILE."""
        p = Path(path)
        stamp = _stamp(p)
        return cls(p, parse(p), stamp)

    @property
    def count(self) -> int:
        """Entries in the file, of every currency."""
        return self._parsed.count

    @property
    def matchable_count(self) -> int:
        """Entries an EVM or Solana payer can match."""
        return sum(1 for a in self._parsed.entries if matchable(a))

    @property
    def source_date(self) -> date | None:
        """The newest date the file states (OFAC's date of issue), if any."""
        return self._parsed.source_date

    @property
    def label(self) -> str:
        return self._parsed.label

    def lookup(self, address: str) -> str | None:
        """The listing that names ``address`` (e.g. "OFAC SDN (SDN_ADVANCED.XML) entry
        12345 'NAME', ETH"), or None. A changed file is reloaded in the background."""
        now = time.monotonic()
        if now - self._checked >= CHECK_EVERY_SECONDS:
            self._checked = now
            self._reload_in_background()
        if not matchable(address):
            return None
        return self._parsed.entries.get(normalize(address))

    def refresh(self) -> bool:
        """Reload now if the file's mtime or size changed; True when a new list is in use.
        A file that cannot be read or parsed keeps the old list (logged)."""
        with self._lock:
            self._checked = time.monotonic()
            try:
                stamp = _stamp(self.path)
            except errors.ConfigError as exc:
                if self._stamp != _GONE:  # said once, not every second
                    _failed(self.path, exc)
                self._stamp = _GONE
                return False
            if stamp == self._stamp:
                return False
            try:
                parsed = parse(self.path)
            except errors.ConfigError as exc:
                self._stamp = stamp  # do not re-parse the same broken file every second
                _failed(self.path, exc)
                return False
            self._parsed, self._stamp = parsed, stamp
            self.loaded_at = datetime.now(UTC)
        log.info("denylist_reloaded", file=str(self.path), entries=parsed.count)
        return True

    def _reload_in_background(self) -> None:
        try:
            if _stamp(self.path) == self._stamp:
                return
        except errors.ConfigError:
            if self._stamp == _GONE:
                return  # still gone: refresh() said so when it went
        if self._reloading is not None and self._reloading.is_alive():
            return
        # A 100 MB XML takes seconds to parse: never on the caller's event loop.
        self._reloading = threading.Thread(target=self.refresh, name="denylist", daemon=True)
        self._reloading.start()


def _failed(path: Path, exc: errors.ConfigError) -> None:
    log.error("denylist_reload_failed", file=str(path), problem="; ".join(exc.problems))


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _problem(path, f"cannot be read ({exc.strerror})") from exc
    return st.st_mtime_ns, st.st_size


def _problem(path: Path, what: str) -> errors.ConfigError:
    return errors.ConfigError(
        [
            f"{VARIABLE}: {path} {what}; give a plain list (one address a line), OFAC's "
            "SDN_ADVANCED.XML or sdn.csv, or unset it"
        ]
    )


def parse(path: Path) -> Parsed:
    """Read a deny-list file in whichever of the three formats it is."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError as exc:
        raise _problem(path, f"cannot be read ({exc.strerror})") from exc
    text = head.decode("utf-8", "replace").lstrip("\ufeff \t\r\n")
    if text.startswith("<"):
        return _parse_xml(path)
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    if re.match(r"\d+,", first.lstrip()):
        return _parse_csv(path)
    return _parse_plain(path)


# ---- plain list ---------------------------------------------------------------------------


def _parse_plain(path: Path) -> Parsed:
    entries: dict[str, str] = {}
    dates: list[date] = []
    for number, raw in enumerate(_text_lines(path), start=1):
        body, _, comment = raw.partition("#")
        dates += _dates(comment)
        address = body.strip()
        if not address:
            continue
        if not matchable(address):
            raise _problem(
                path,
                f"line {number}: {address[:60]!r} is not an EVM address (0x and 40 hex "
                "digits) or a Solana address (base58)",
            )
        entries.setdefault(normalize(address), f"deny-list {path.name} line {number}")
    return Parsed(entries, len(entries), max(dates, default=None), f"deny-list {path.name}")


def _text_lines(path: Path, errors_: str = "strict") -> Iterator[str]:
    try:
        with open(path, encoding="utf-8-sig", errors=errors_, newline="") as f:
            yield from f
    except UnicodeDecodeError as exc:
        raise _problem(path, "is not UTF-8 text") from exc
    except OSError as exc:
        raise _problem(path, f"cannot be read ({exc.strerror})") from exc


def _dates(text: str) -> list[date]:
    out = []
    for y, m, d in _ISO_DATE.findall(text):
        try:
            out.append(date(int(y), int(m), int(d)))
        except ValueError:
            continue
    return out


# ---- sdn.csv ------------------------------------------------------------------------------

_CSV_COLUMNS = 12  # ent_num, SDN_Name, SDN_Type, Program, ..., Remarks (OFAC's dat_spec)


def _parse_csv(path: Path) -> Parsed:
    entries: dict[str, str] = {}
    count = 0
    # OFAC's CSV is not always UTF-8 (names in Windows-1252); the addresses are ASCII.
    reader = csv.reader(_text_lines(path, "replace"))
    try:
        for row in reader:
            if not row or (len(row) == 1 and row[0].strip() in ("", "\x1a")):
                continue  # blank, or the DOS end-of-file mark OFAC's files end with
            if len(row) < _CSV_COLUMNS:
                raise _problem(
                    path,
                    f"line {reader.line_num}: {len(row)} columns where sdn.csv has {_CSV_COLUMNS}",
                )
            ref, name, remarks = row[0].strip(), _null(row[1]), row[11]
            for currency, address in _CSV_DCA.findall(remarks):
                count += 1
                entries.setdefault(
                    normalize(address), _listing(CSV_LABEL, ref, name, currency.upper())
                )
    except csv.Error as exc:
        raise _problem(path, f"is not readable CSV ({exc})") from exc
    return Parsed(entries, count, None, CSV_LABEL)


def _null(value: str) -> str:
    value = value.strip()
    return "" if value == "-0-" else value


def _listing(label: str, ref: str, name: str, currency: str) -> str:
    shown = f" '{name}'" if name else ""
    return f"{label} entry {ref}{shown}, {currency}"


# ---- SDN_ADVANCED.XML ----------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]  # the file's namespace changed over the years: ignore it


def _parse_xml(path: Path) -> Parsed:
    reader = _XmlReader()
    try:
        for event, elem in ET.iterparse(path, events=("start", "end")):
            reader.feed(event, elem)
    except ET.ParseError as exc:
        raise _problem(path, f"is not well-formed XML ({exc})") from exc
    except OSError as exc:
        raise _problem(path, f"cannot be read ({exc.strerror})") from exc
    if not reader.seen_root:
        raise _problem(path, "is XML but not OFAC's SDN_ADVANCED.XML (no <Sanctions>)")
    return Parsed(reader.entries, reader.count, reader.issued(), XML_LABEL)


class _XmlReader:
    """The SDN_ADVANCED.XML walk: feature types from the reference sets (they come
    first), then each DistinctParty's digital currency features; every item under a
    top-level section is dropped once read."""

    def __init__(self) -> None:
        self.stack: list[ET.Element] = []
        self.types: dict[str, str] = {}  # FeatureTypeID -> currency (ETH, XBT, ...)
        self.entries: dict[str, str] = {}
        self.count = 0
        self.date: dict[str, str] = {}
        self.seen_root = False

    def feed(self, event: str, elem: ET.Element) -> None:
        if event == "start":
            if not self.stack and _local(elem.tag) == "Sanctions":
                self.seen_root = True
            self.stack.append(elem)
            return
        self.stack.pop()
        tag = _local(elem.tag)
        parent = _local(self.stack[-1].tag) if self.stack else ""
        if tag == "FeatureType" and (elem.text or "").strip().startswith(_DCA):
            self.types[elem.get("ID", "")] = (elem.text or "").strip()[len(_DCA) :].strip()
        elif parent == "DateOfIssue" and tag in ("Year", "Month", "Day"):
            self.date[tag] = (elem.text or "").strip()
        elif tag == "DistinctParty":
            self._party(elem)
        if len(self.stack) == 2:  # an item of a top-level section: read, now drop it
            elem.clear()
            self.stack[-1].remove(elem)

    def _party(self, party: ET.Element) -> None:
        ref, name = party.get("FixedRef", "?"), _name_of(party)
        for feature in party.iter():
            if _local(feature.tag) != "Feature" or feature.get("FeatureTypeID") not in self.types:
                continue
            currency = self.types[feature.get("FeatureTypeID", "")]
            for detail in feature.iter():
                address = (detail.text or "").strip()
                if _local(detail.tag) == "VersionDetail" and address:
                    self.count += 1
                    self.entries.setdefault(
                        normalize(address), _listing(XML_LABEL, ref, name, currency)
                    )

    def issued(self) -> date | None:
        try:
            return date(int(self.date["Year"]), int(self.date["Month"]), int(self.date["Day"]))
        except (KeyError, ValueError):
            return None


def _name_of(party: ET.Element) -> str:
    """The party's primary alias, its name parts in order."""
    for alias in party.iter():
        if _local(alias.tag) == "Alias" and alias.get("Primary") == "true":
            parts = (p.text or "" for p in alias.iter() if _local(p.tag) == "NamePartValue")
            return " ".join(p.strip() for p in parts if p.strip())
    return ""
