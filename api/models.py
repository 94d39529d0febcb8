"""Request bodies of the x402 routes: strict, bounded, documented in OpenAPI.

Every string field is :data:`api.text.SafeStr`: a NUL or a lone surrogate is a 422
naming the field, never a database error (503) on the way to SQL."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Self
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.chains import ChainParam
from api.text import SafeStr

_STRICT = ConfigDict(extra="forbid")


class InvoiceRequest(BaseModel):
    """Ask for ``requests`` calls, or for ``amount_usd`` worth of calls (whole calls)."""

    model_config = _STRICT

    chain: ChainParam
    requests: int | None = Field(default=None, ge=1, le=1_000_000)
    amount_usd: Decimal | None = Field(
        default=None, gt=0, le=100_000, max_digits=12, decimal_places=6
    )

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if (self.requests is None) == (self.amount_usd is None):
            raise ValueError("give exactly one of requests or amount_usd")
        return self


class VerifyRequest(BaseModel):
    model_config = _STRICT

    chain: ChainParam
    tx_hash: SafeStr = Field(
        min_length=1,
        max_length=200,
        description="EVM: 0x + 64 hex digits (any case); Solana: the signature",
    )


class ClaimRequest(BaseModel):
    """Either ``invoice_id`` + ``claim_secret``, or ``chain`` + ``tx_hash`` + ``signature``."""

    model_config = _STRICT

    invoice_id: UUID | None = None
    claim_secret: SafeStr | None = Field(default=None, min_length=1, max_length=200)
    chain: ChainParam | None = None
    tx_hash: SafeStr | None = Field(default=None, min_length=1, max_length=200)
    signature: SafeStr | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="over claim_message: EIP-191 or EIP-1271 (hex) on EVM, "
        "ed25519 (base58 or base64) on Solana",
    )
    log_index: int | None = Field(
        default=None,
        ge=0,
        le=1_000_000,
        description="which transfer of the transaction, if several",
    )

    @model_validator(mode="after")
    def _one_proof(self) -> Self:
        by_invoice = self.invoice_id is not None or self.claim_secret is not None
        by_signature = any(v is not None for v in (self.chain, self.tx_hash, self.signature))
        if by_invoice == by_signature:
            raise ValueError(
                "give either invoice_id + claim_secret, or chain + tx_hash + signature"
            )
        if by_invoice and (self.invoice_id is None or self.claim_secret is None):
            raise ValueError("an invoice claim needs both invoice_id and claim_secret")
        if by_signature and (self.chain is None or self.tx_hash is None or self.signature is None):
            raise ValueError("a signed claim needs chain, tx_hash and signature")
        return self


class MarkRequest(BaseModel):
    model_config = _STRICT

    action: Literal["settle", "invalidate"]
    reason: SafeStr = Field(min_length=1, max_length=500)


# ---- responses (documented in OpenAPI; routes return dicts validated against these) ------


class TokenIssued(BaseModel):
    token: str = Field(description="send as x-payment-token; shown once, stored as SHA-256")
    token_id: int
    requests: int
    remaining: int
    expires_at: datetime
    chain: str
    tx_hash: str
    payment_id: int
    header: str
    note: str


class TokenStatus(BaseModel):
    token_id: int
    requests_total: int
    remaining: int
    created_at: datetime
    expires_at: datetime
    active: bool
    expired: bool


class Invoice(BaseModel):
    invoice_id: str
    chain: str
    pay_to: str
    asset: str
    amount: str = Field(description="base units (1 USDC = 1000000); on EVM pay exactly this")
    amount_usd: str
    requests: int
    created_at: datetime
    expires_at: datetime
    late_payments_until: datetime
    status: str | None = Field(default=None, description="open|paid|credited|expired|claimed")
    claim_secret: SafeStr | None = Field(default=None, description="only when created; shown once")
    reference: str | None = None
    solana_pay_url: str | None = None
    commitment: str | None = None
    confirmations: int | None = None
    pay_exactly: str | None = None
    payment: dict[str, Any] | None = None
    token_id: int | None = None
    note: str | None = None
