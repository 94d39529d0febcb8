"""Helpers for the Solana `exact` x402 tests: our app settling on the local LiteSVM node as
fee payer, the x402 package's own SVM client paying, and hand-built payment transactions for
everything a client must not get away with."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from dataclasses import dataclass, field
from typing import Any

import httpx
from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import MessageV0, to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction
from x402 import x402Client
from x402.http import utils as x402_http
from x402.mechanisms.svm.constants import MEMO_PROGRAM_ADDRESS, SOLANA_DEVNET_CAIP2
from x402.mechanisms.svm.exact.client import ExactSvmScheme
from x402.mechanisms.svm.exact.v1.client import ExactSvmSchemeV1
from x402.mechanisms.svm.signers import KeypairSigner
from x402.schemas import PaymentPayload, PaymentRequired, PaymentRequirements
from x402.schemas.v1 import PaymentRequiredV1

from devkit.api_support import make_settings
from devkit.solana_node import World as NodeWorld
from devkit.solana_node.helpers import transfer_checked_ix
from watcher.settings import Settings

PRICE = 100_000  # $0.10, the default X402_PRICE_PER_CALL
ROUTE = "/x402/example/paid"
NETWORK = SOLANA_DEVNET_CAIP2  # the x402 SVM client knows only the public clusters' ids
MEMO = Pubkey.from_string(MEMO_PROGRAM_ADDRESS)


@dataclass
class World:
    """The local node with USDC, a paying wallet (alice), our owner and our fee payer."""

    node: NodeWorld
    fee_payer: Keypair
    settings: Settings
    memos: list[bytes] = field(default_factory=list)

    @property
    def usdc(self) -> Pubkey:
        return self.node.usdc

    @property
    def alice(self) -> Keypair:
        return self.node.alice

    @property
    def owner(self) -> Pubkey:
        return self.node.merchant.pubkey()

    def balance(self, owner: Pubkey, mint: Pubkey | None = None) -> int:
        """A token balance at the newest slot (0 without an account)."""
        from devkit.solana_node.layouts import decode_token_account

        ata = self.node.bank.ata(owner, mint or self.usdc)
        acct = self.node.node.chain.svm.get_account(ata)
        decoded = decode_token_account(bytes(acct.data)) if acct else None
        return decoded[2] if decoded else 0

    def lamports(self, key: Pubkey) -> int:
        acct = self.node.node.chain.svm.get_account(key)
        return acct.lamports if acct else 0

    def blockhash(self) -> Hash:
        return Hash.from_string(self.node.node.chain.latest_block("confirmed").blockhash)


def make_world(node: NodeWorld, *, fee_payer_sol: int = 1, **over: Any) -> World:
    node.bank.create_ata(node.merchant.pubkey(), node.usdc)
    fee_payer = node.bank.wallet(fee_payer_sol) if fee_payer_sol else Keypair()
    values: dict[str, Any] = {
        "x402_base_payment_address": None,
        "x402_ethereum_payment_address": None,
        "x402_solana_payment_address": str(node.merchant.pubkey()),
        "x402_solana_rpc_url": node.node.url,
        "x402_solana_usdc_mint": str(node.usdc),
        "x402_solana_fee_payer_private_key": str(fee_payer),
        "x402_solana_network": NETWORK,
        "x402_settle_timeout_seconds": 10,
    }
    values.update(over)
    return World(node, fee_payer, make_settings(**values))


# ---- the x402 package's client -------------------------------------------------------


@dataclass
class Payer:
    """The x402 client with the package's SVM schemes registered for our network."""

    client: x402Client
    schemes: tuple[Any, ...]

    def close(self) -> None:
        """The schemes cache synchronous solana-py clients; close their HTTP sessions."""
        for scheme in self.schemes:
            for rpc in scheme._clients.values():
                rpc._provider.session.close()


def paying_client(payer: Keypair, rpc_url: str, mint: Pubkey, cap_units: int = PRICE) -> Payer:
    """The x402 client with an SVM signer, allowed ``cap_units`` (one call's worth) of our
    test mint."""
    signer = KeypairSigner(payer)
    v2, v1 = ExactSvmScheme(signer, rpc_url), ExactSvmSchemeV1(signer, rpc_url)
    client = x402Client().register(NETWORK, v2).register_v1("solana-devnet", v1)
    cap = str(cap_units)
    client.set_spend_controls(
        {
            "allowed_assets": [
                {"network": NETWORK, "asset": str(mint), "max_amount_per_payment": cap},
                {"network": "solana-devnet", "asset": str(mint), "max_amount_per_payment": cap},
            ]
        }
    )
    return Payer(client, (v2, v1))


async def _in_thread(world: World, required: Any, cap_units: int = PRICE) -> Any:
    # The SVM client reads the mint and a blockhash with blocking HTTP; the node answers from
    # this event loop, so the client gets a loop of its own in a worker thread.
    payer = paying_client(world.alice, world.node.node.url, world.usdc, cap_units)
    try:
        return await asyncio.to_thread(asyncio.run, payer.client.create_payment_payload(required))
    finally:
        payer.close()


async def client_v2_header(
    http: httpx.AsyncClient, world: World, route: str = ROUTE, cap_units: int = PRICE
) -> dict[str, str]:
    """Ask the route (402) and let the x402 client pay its Solana offer (PAYMENT-SIGNATURE)."""
    resp = await http.get(route)
    assert resp.status_code == 402, resp.text
    required = x402_http.decode_payment_required_header(resp.headers["PAYMENT-REQUIRED"])
    assert isinstance(required, PaymentRequired)
    payload = await _in_thread(world, required, cap_units)
    return {"PAYMENT-SIGNATURE": x402_http.encode_payment_signature_header(payload)}


async def client_v1_header(
    http: httpx.AsyncClient, world: World, route: str = ROUTE, cap_units: int = PRICE
) -> dict[str, str]:
    """The x402 client paying the v1 body's Solana entry (X-PAYMENT)."""
    resp = await http.get(route)
    assert resp.status_code == 402, resp.text
    required = PaymentRequiredV1.model_validate(resp.json())
    payload = await _in_thread(world, required, cap_units)
    return {"X-PAYMENT": x402_http.encode_payment_signature_header(payload)}


# ---- hand-built payments ---------------------------------------------------------------


async def solana_offer(http: httpx.AsyncClient, route: str = ROUTE) -> dict[str, Any]:
    resp = await http.get(route)
    assert resp.status_code == 402, resp.text
    required = json.loads(base64.b64decode(resp.headers["PAYMENT-REQUIRED"]))
    offer: dict[str, Any] = next(a for a in required["accepts"] if a["network"] == NETWORK)
    return offer


def payment_tx(
    world: World,
    *,
    payer: Keypair | None = None,
    amount: int = PRICE,
    mint: Pubkey | None = None,
    to_owner: Pubkey | None = None,
    fee_payer: Pubkey | None = None,
    authority: Keypair | None = None,
    memo: bytes | None = b"",
    units: int = 20_000,
    micro_lamports: int = 1,
    extra: tuple[Instruction, ...] = (),
    blockhash: Hash | None = None,
    signer: Keypair | None = None,
    decimals: int = 6,
    memo_signers: tuple[Pubkey, ...] = (),
    lookup_table: bool = False,
    before_transfer: tuple[Instruction, ...] = (),
) -> VersionedTransaction:
    """What an x402 client sends: compute budget, TransferChecked and a memo, signed by the
    payer, with our fee payer's signature slot empty. Each keyword bends one rule."""
    payer = payer or world.alice
    authority = authority or payer
    mint = mint or world.usdc
    bank = world.node.bank
    transfer = transfer_checked_ix(
        bank.ata(payer.pubkey(), mint),
        mint,
        bank.ata(to_owner or world.owner, mint),
        authority.pubkey(),
        amount,
        decimals,
    )
    ixs = [set_compute_unit_limit(units), set_compute_unit_price(micro_lamports)]
    ixs += [*before_transfer, transfer]  # e.g. the spec's optional create-ATA
    if memo is not None:
        if memo == b"":  # a fresh nonce, as the x402 client makes
            memo = os.urandom(16).hex().encode()
        world.memos.append(memo)
        ixs.append(Instruction(MEMO, memo, [AccountMeta(k, True, False) for k in memo_signers]))
    ixs.extend(extra)
    # A lookup table holding our token account moves it out of the message's own keys.
    tables = (
        [AddressLookupTableAccount(Keypair().pubkey(), [bank.ata(to_owner or world.owner, mint)])]
        if lookup_table
        else []
    )
    message = MessageV0.try_compile(
        fee_payer or world.fee_payer.pubkey(), ixs, tables, blockhash or world.blockhash()
    )
    their_sig = (signer or authority).sign_message(to_bytes_versioned(message))
    slots = [Signature.default()] * message.header.num_required_signatures
    index = list(message.account_keys).index(authority.pubkey())
    slots[index] = their_sig
    return VersionedTransaction.populate(message, slots)


def v2_header_for(offer: dict[str, Any], tx: VersionedTransaction) -> dict[str, str]:
    payload = PaymentPayload(
        x402_version=2,
        accepted=PaymentRequirements.model_validate(offer),
        payload={"transaction": base64.b64encode(bytes(tx)).decode()},
    )
    return {"PAYMENT-SIGNATURE": x402_http.encode_payment_signature_header(payload)}


def decode_header(value: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(base64.b64decode(value))
    return data
