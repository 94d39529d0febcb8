"""The gateway: any HTTP API behind the paywall (docs/gateway.md)."""
