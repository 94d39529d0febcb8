"""The development kit: local chains and services for tests, benches and the devnet.

Used by ``tests/`` and by ``scripts/`` alike, so it lives beside them rather than
inside either (a script importing ``tests`` would depend on the test suite's layout).
It is not part of the product: the wheel packages only ``watcher`` and ``api``
(pyproject ``[tool.setuptools.packages.find]``) and the image copies neither this
folder nor ``tests/``. Import it from a source checkout (the repo root on
``sys.path``: pytest, ``python -m``, or the scripts, which put it there themselves).

    anvil         anvil on a free loopback port; deploy and drive the test USDC contracts
    evmkit        an EVM follower on anvil in burst mode, own signing keys, ledger reads
    faultproxy    a JSON-RPC proxy (HTTP + websocket) that misbehaves on demand
    pg            a session PostgreSQL (DATABASE_URL or embedded) with a migrated template
    solana_node/  a LiteSVM-backed Solana JSON-RPC node running the real SPL token program
    api_support   our app's settings, served under uvicorn; ledger rows as a follower writes them
    stripe_helpers  signed Stripe webhook deliveries, event builders, localstripe
    x402kit       an EIP-3009 USDC on anvil and the x402 package's own EVM client paying
    x402svmkit    the x402 package's SVM client and hand-built Solana payment transactions
    proxies       real nginx, Caddy and Traefik from a test's config, own port and temp dir
    upstream      a small real upstream (echo, streams, SSE, slow, failing, uploads) that
                  checks the gateway's X-Payment-* signature (``verify_gateway``)
    gateway_verify.mjs  the same check in plain Node, plus a tiny server mode

Nothing here asserts a test's outcome: fixtures stay in ``tests/conftest.py`` and
the checks in the tests.
"""
