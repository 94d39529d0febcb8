"""Pay an invoice on the devnet, claim the token, and spend it (run ``make devnet`` first).

    python scripts/pay.py [--chain base|solana] [--requests 3] [--state .devnet/devnet.json]

Every step is printed: the invoice, the on-chain payment, the watcher seeing it
and crediting it once confirmed, the claim (with the invoice's secret), then one
paid call after another until the token is used up and the API answers 402.
Exit code 0 when all of that happened as expected.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

try:
    import httpx
except ImportError as exc:  # a bare `python` without the project's packages
    sys.exit(
        f"pay.py: {exc.name} is missing: run it with the project's interpreter, "
        ".venv/bin/python scripts/pay.py (`make install` creates .venv)"
    )

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CREDIT_TIMEOUT_SECONDS = 120
PAID_ROUTE = "/x402/example/paid"


def step(text: str) -> None:
    print(f"-> {text}", flush=True)


def rpc(url: str, method: str, params: list[Any]) -> Any:
    body = httpx.post(
        url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}, timeout=30
    ).json()
    if "error" in body:
        raise RuntimeError(f"{method}: {body['error']}")
    return body["result"]


def pay_base(state: dict[str, Any], invoice: dict[str, Any]) -> str:
    from devkit.anvil import calldata

    base = state["base"]
    data = calldata("transfer(address,uint256)", invoice["pay_to"], int(invoice["amount"]))
    tx: str = rpc(
        base["rpc_url"],
        "eth_sendTransaction",
        [{"from": base["payer"], "to": base["usdc"], "data": data}],
    )
    return tx


def pay_solana(state: dict[str, Any], invoice: dict[str, Any]) -> str:
    import base64

    from solders.hash import Hash
    from solders.instruction import AccountMeta, Instruction
    from solders.keypair import Keypair
    from solders.message import Message
    from solders.pubkey import Pubkey
    from solders.transaction import Transaction

    from devkit.solana_node.helpers import transfer_checked_ix
    from watcher.chains.solana import associated_token_account

    sol = state["solana"]
    payer = Keypair.from_bytes(bytes(sol["payer_secret"]))
    mint = Pubkey.from_string(sol["usdc_mint"])
    source = Pubkey.from_string(associated_token_account(str(payer.pubkey()), sol["usdc_mint"]))
    dest = Pubkey.from_string(associated_token_account(invoice["pay_to"], sol["usdc_mint"]))
    ix = transfer_checked_ix(source, mint, dest, payer.pubkey(), int(invoice["amount"]), 6)
    # Solana Pay: the invoice's reference key rides along as a read-only, non-signer account.
    reference = AccountMeta(Pubkey.from_string(invoice["reference"]), False, False)
    ix = Instruction(ix.program_id, ix.data, [*ix.accounts, reference])
    blockhash = rpc(sol["rpc_url"], "getLatestBlockhash", [{"commitment": "confirmed"}])
    tx = Transaction(
        [payer], Message([ix], payer.pubkey()), Hash.from_string(blockhash["value"]["blockhash"])
    )
    sig: str = rpc(
        sol["rpc_url"],
        "sendTransaction",
        [base64.b64encode(bytes(tx)).decode(), {"encoding": "base64"}],
    )
    return sig


def wait_credited(client: httpx.Client, invoice_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + CREDIT_TIMEOUT_SECONDS
    last = None
    while time.monotonic() < deadline:
        status: dict[str, Any] = client.get(f"/x402/invoices/{invoice_id}").json()
        # A payment still short of its confirmations: {"have", "need"} blocks (EVM) or the
        # commitment it waits for (Solana).
        conf = (status.get("payment") or {}).get("confirmations")
        shown = (status.get("status"), json.dumps(conf, sort_keys=True))
        if shown != last:
            detail = ""
            if isinstance(conf, dict) and "have" in conf:
                detail = f" ({conf['have']} of {conf['need']} confirmations)"
            elif isinstance(conf, dict) and "commitment" in conf:
                detail = f" (waiting for {conf['commitment']})"
            step(f"invoice {status.get('status')}{detail}")
            last = shown
        if status.get("status") == "credited":
            return status
        time.sleep(0.5)
    raise TimeoutError("the payment was not credited in time")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--chain", choices=["base", "solana"], default="base")
    p.add_argument("--requests", type=int, default=3, help="calls to buy")
    p.add_argument("--state", type=Path, default=ROOT / ".devnet" / "devnet.json")
    args = p.parse_args()
    if not args.state.exists():
        print(
            f"pay.py: {args.state} not found; start the devnet first: make devnet", file=sys.stderr
        )
        return 2
    state = json.loads(args.state.read_text())
    with httpx.Client(base_url=state["api"], timeout=10) as client:
        resp = client.post("/x402/invoices", json={"chain": args.chain, "requests": args.requests})
        if resp.status_code != 201 and resp.status_code != 200:
            print(f"pay.py: invoice refused: {resp.status_code} {resp.text}", file=sys.stderr)
            return 1
        invoice = resp.json()
        step(
            f"invoice {invoice['invoice_id']}: pay {invoice['amount']} base units "
            f"(${invoice['amount_usd']}) to {invoice['pay_to']} on {args.chain}"
        )
        tx = pay_base(state, invoice) if args.chain == "base" else pay_solana(state, invoice)
        step(f"paid: {tx}")
        wait_credited(client, invoice["invoice_id"])
        claim = client.post(
            "/x402/generate-token",
            json={"invoice_id": invoice["invoice_id"], "claim_secret": invoice["claim_secret"]},
        )
        if claim.status_code not in (200, 201):
            print(f"pay.py: claim refused: {claim.status_code} {claim.text}", file=sys.stderr)
            return 1
        token = claim.json()["token"]
        step(f"token claimed: {claim.json()['remaining']} calls")
        for call in range(1, args.requests + 2):
            r = client.get(PAID_ROUTE, headers={"x-payment-token": token})
            if r.status_code == 402:
                step(f"call {call}: 402 Payment Required ({r.json().get('error')}): token used up")
                return 0 if call == args.requests + 1 else 1
            step(f"call {call}: {r.status_code} {r.json()}")
    print("pay.py: the token was never used up", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
