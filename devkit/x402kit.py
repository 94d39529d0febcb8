"""Helpers for the standard-x402 tests and bench: an EIP-3009 USDC on anvil (chain id 8453, so the
x402 v1 client's "base" network matches), our app configured to settle with a relayer,
and the x402 package's own client paying."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import httpx
from eth_abi.abi import encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from x402 import x402Client
from x402.http.x402_http_client import x402HTTPClient
from x402.mechanisms.evm.exact.register import register_exact_evm_client
from x402.schemas import PaymentRequired, PaymentRequirements
from x402.schemas.v1 import PaymentRequiredV1

from devkit.anvil import Anvil, Token, artifact
from devkit.api_support import make_settings
from watcher.settings import EvmChain, Settings

BASE_CHAIN_ID = 8453
PRICE = 100_000  # $0.10, the default X402_PRICE_PER_CALL
ROUTE = "/x402/example/paid"


async def deploy_token3009(node: Anvil) -> Token:
    """TestToken3009 ("USD Coin", EIP-712 version "2"); deployer is anvil's first account."""
    data = (
        artifact("TestToken3009")["bytecode"]
        + encode(["string", "string"], ["USD Coin", "USDC"]).hex()
    )
    tx = await node.send(node.accounts[0], None, data, gas=3_000_000)
    rec = await node.receipt(tx)
    assert rec["status"] == "0x1", rec
    return Token(node=node, address=rec["contractAddress"].lower())


@dataclass
class World:
    node: Anvil
    token: Token
    payer: LocalAccount
    receiver: str  # lowercase
    relayer: LocalAccount
    settings: Settings

    def chain(self, confirmations: int = 2) -> EvmChain:
        return EvmChain(
            name="base",
            chain_id=BASE_CHAIN_ID,
            rpc_urls=(self.node.url,),
            ws_urls=(),
            usdc=self.token.address,
            receivers=(self.receiver,),
            confirmations=confirmations,
            start_block=0,
        )


async def make_world(node: Anvil, *, fund_relayer: bool = True, **over: Any) -> World:
    token = await deploy_token3009(node)
    payer: LocalAccount = Account.create()
    relayer: LocalAccount = Account.create()
    receiver = Account.create().address.lower()
    await token.mint(payer.address.lower(), 10 * PRICE)
    if fund_relayer:
        await node.rpc("anvil_setBalance", relayer.address, hex(10**18))
    values: dict[str, Any] = {
        "x402_base_payment_address": receiver,
        "x402_base_rpc_url": node.url,
        "x402_base_usdc_address": token.address,
        "x402_base_chain_id": BASE_CHAIN_ID,
        "x402_ethereum_payment_address": None,
        "x402_solana_payment_address": None,
        "x402_relayer_private_key": relayer.key.hex(),
    }
    values.update(over)
    return World(node, token, payer, receiver, relayer, make_settings(**values))


def paying_client(payer: LocalAccount, asset: str, cap_units: int = PRICE) -> x402Client:
    """The x402 client, allowed to spend up to ``cap_units`` (one call) of our test token
    (not a default asset the SDK knows)."""
    client = x402Client()
    register_exact_evm_client(client, payer)
    cap = str(cap_units)
    client.set_spend_controls(
        {
            "allowed_assets": [
                {
                    "network": f"eip155:{BASE_CHAIN_ID}",
                    "asset": asset,
                    "max_amount_per_payment": cap,
                },
                {"network": "base", "asset": asset, "max_amount_per_payment": cap},
            ]
        }
    )
    return client


def decode_header(value: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(base64.b64decode(value))
    return data


async def v2_header(
    http: httpx.AsyncClient,
    world: World,
    payer: LocalAccount | None = None,
    route: str = ROUTE,
    cap_units: int = PRICE,
    **sign_over: Any,
) -> dict[str, str]:
    """Ask the route (402), let the x402 client sign; ``sign_over`` changes what it signs
    while ``accepted`` still names our requirements (a client lying about what it paid)."""
    resp = await http.get(route)
    assert resp.status_code == 402, resp.text
    required = PaymentRequired.model_validate(decode_header(resp.headers["PAYMENT-REQUIRED"]))
    ours = required.accepts[0]
    signed = required.model_copy(
        update={"accepts": [ours.model_copy(update=sign_over)] if sign_over else required.accepts}
    )
    client = paying_client(payer or world.payer, world.token.address, cap_units)
    payload = await client.create_payment_payload(signed)
    payload = payload.model_copy(update={"accepted": PaymentRequirements.model_validate(ours)})
    return x402HTTPClient(client).encode_payment_signature_header(payload)


async def v1_header(
    http: httpx.AsyncClient, world: World, route: str = ROUTE, cap_units: int = PRICE
) -> dict[str, str]:
    """The x402 client paying the v1 body (the ``X-PAYMENT`` header)."""
    resp = await http.get(route)
    assert resp.status_code == 402, resp.text
    required = PaymentRequiredV1.model_validate(resp.json())
    client = paying_client(world.payer, world.token.address, cap_units)
    payload = await client.create_payment_payload(required)
    return x402HTTPClient(client).encode_payment_signature_header(payload)


def facilitator_app(node: Anvil, key: str) -> Any:
    """A facilitator built from the x402 package's own parts (x402Facilitator, the exact EVM
    scheme, FacilitatorWeb3Signer), served by the test on loopback."""
    from fastapi import FastAPI
    from x402 import x402Facilitator
    from x402.mechanisms.evm.exact.register import register_exact_evm_facilitator
    from x402.mechanisms.evm.signers import FacilitatorWeb3Signer
    from x402.schemas import PaymentPayload

    facilitator = x402Facilitator()
    signer = FacilitatorWeb3Signer(private_key=key, rpc_url=node.url)
    register_exact_evm_facilitator(facilitator, signer, networks=f"eip155:{BASE_CHAIN_ID}")
    app = FastAPI()
    calls: list[str] = []
    app.state.calls = calls

    def parse(body: dict[str, Any]) -> tuple[PaymentPayload, PaymentRequirements]:
        return (
            PaymentPayload.model_validate(body["paymentPayload"]),
            PaymentRequirements.model_validate(body["paymentRequirements"]),
        )

    @app.post("/verify")
    async def verify(body: dict[str, Any]) -> dict[str, Any]:
        calls.append("verify")
        result = await facilitator.verify(*parse(body))
        return result.model_dump(by_alias=True, exclude_none=True)

    @app.post("/settle")
    async def settle(body: dict[str, Any]) -> dict[str, Any]:
        calls.append("settle")
        result = await facilitator.settle(*parse(body))
        return result.model_dump(by_alias=True, exclude_none=True)

    return app
