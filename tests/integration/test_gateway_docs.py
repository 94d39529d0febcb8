"""docs/gateway.md's upstream checks, run as written: the Python and the Node snippets
accept what the gateway signs and refuse a tampered call, and they are the functions the
tests' upstream runs (so the page cannot drift from what is tested)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from api import gate
from api.gateway import common

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "gateway.md").read_text()
SECRET = b"docs-secret"


def block(heading: str, lang: str) -> str:
    section = DOC.split(f"### {heading}\n", 1)[1]
    found = re.search(rf"```{lang}\n(.*?)\n```", section, re.S)
    assert found is not None, heading
    return found.group(1)


def signed(target: str, body: bytes) -> dict[str, str]:
    charged = gate.Charge(
        token_id=1,
        remaining=4,
        expires_at=datetime.now(UTC),
        usage_id=7,
        rail="token",
        payer="token:1",
        charge_id="tok_7",
    )
    digest = hashlib.sha256(body).hexdigest()
    return common.upstream_headers(charged, "GET", target, digest, SECRET)


def test_the_python_snippet_is_the_tested_function_and_checks_what_we_sign() -> None:
    code = block("Checking it in Python", "python")
    source = (ROOT / "devkit" / "upstream.py").read_text()
    assert code in source  # the page shows the function the tests' upstream runs
    scope: dict[str, Any] = {}
    exec("import hashlib, hmac, time\nfrom typing import Mapping\n" + code, scope)
    verify: Callable[..., str | None] = scope["verify_gateway"]
    headers = signed("/api/forecast/paris?days=3", b"{}")
    seen: dict[str, float] = {}
    assert verify(SECRET, "GET", "/api/forecast/paris?days=3", headers, b"{}", seen) is None
    again = verify(SECRET, "GET", "/api/forecast/paris?days=3", headers, b"{}", seen)
    assert again == "charge id already used"
    moved = verify(SECRET, "GET", "/api/forecast/rome?days=3", headers, b"{}", {})
    assert moved == "bad signature"
    assert verify(SECRET, "GET", "/api/forecast/paris?days=3", headers, b"[]", {}) == (
        "body hash mismatch"
    )


def test_the_node_snippet_is_the_tested_function_and_checks_what_we_sign(tmp_path: Path) -> None:
    code = block("Checking it in Node", "js")
    assert code in (ROOT / "devkit" / "gateway_verify.mjs").read_text()
    module = tmp_path / "verify.mjs"
    module.write_text(
        'import { createHash, createHmac, timingSafeEqual } from "node:crypto";\n' + code
    )
    headers = {k.lower(): v for k, v in signed("/api/x?y=1", b"{}").items()}
    script = (
        f"import {{ verifyGateway }} from {json.dumps(module.as_uri())};\n"
        f"const headers = {json.dumps(headers)};\n"
        "const seen = new Map();\n"
        "const run = (target, body) => verifyGateway({ secret: 'docs-secret', method: 'GET',"
        " target, headers, body: Buffer.from(body), seen });\n"
        "console.log(JSON.stringify([run('/api/x?y=1', '{}'), run('/api/x?y=1', '{}'),"
        " run('/api/x?y=2', '{}')]));\n"
    )
    out = subprocess.run(
        ["node", "--input-type=module", "-e", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert json.loads(out.stdout) == [None, "charge id already used", "bad signature"]
