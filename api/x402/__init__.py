"""Standard x402: any x402 client pays per request, and we settle before serving.

How a payment flows through the package (``api.paywall`` calls :mod:`.pay`)::

    402 ── offers.py ──────────── accepts list, PAYMENT-REQUIRED (v2), v1 entries
            │                       (EVM: EIP-712 domain; Solana: our feePayer)
    PAYMENT-SIGNATURE / X-PAYMENT
            │
            ▼
    pay.settle ── payload.match ── decode the header, find the offer it pays
            │
            ├─ family evm ──── evm.verify ──────── EIP-3009 terms + signature, offline
            │                   screen.check ────── a denied payer refused (deny-list, oracle)
            │                   evm_settle.settle ─ balance, claim the nonce row, then
            │                        ├─ relayer.py      our key: simulate, sign, send, receipt
            │                        └─ facilitator.py  or POST /verify, /settle
            │
            └─ family solana ─ svm_decode.verify ─ instructions, amount, signature, offline
                                screen.check ────── a denied payer refused (deny-list)
                                svm_settle.settle ─ co-sign, simulate, claim the row,
                                                   broadcast, poll until confirmed
            │
            ▼
    records.py ── the rows both share (claimed before broadcast, settled after),
                  consuming the follower's credit if it came first → Settled
            │
            ▼
    200 with PAYMENT-RESPONSE (offers.response_header); a refusal is errors.Refused (402)

``clients.Clients`` holds what talks to the outside, built once per app in
``api.app.create_app`` and closed at shutdown: one settlement RPC pool per
network, the EIP-1271 pools of contract-wallet claims, the relayer and its
lock per EVM network, the facilitator's HTTP client. ``errors`` is the
package's exception tree. Our own invoice and token routes are
``api/routes/tokens.py``, not this package.
"""
