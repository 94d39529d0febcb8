"""An x402 facilitator's HTTP API: ``POST /verify`` and ``POST /settle``.

Used instead of our relayer when ``X402_FACILITATOR_URL`` is set: the payer's
payload is forwarded as is, with the ``x402`` package's request and response
types. One client per app (:mod:`api.x402.clients`), its connections kept.
"""

from __future__ import annotations

from typing import Any

import httpx
from x402.schemas import SettleResponse, VerifyResponse

from api.x402.errors import SettlementUnknown


class Facilitator:
    """An x402 facilitator's HTTP API (``POST /verify``, ``POST /settle``)."""

    def __init__(
        self, url: str, *, transport: httpx.AsyncBaseTransport, timeout: float = 30.0
    ) -> None:
        self._url = url.rstrip("/")
        self._client = httpx.AsyncClient(timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def verify(self, body: dict[str, Any]) -> VerifyResponse:
        """``body`` is ``{x402Version, paymentPayload, paymentRequirements}``."""
        return VerifyResponse.model_validate(await self._post("/verify", body))

    async def settle(self, body: dict[str, Any]) -> SettleResponse:
        return SettleResponse.model_validate(await self._post("/settle", body))

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        try:
            resp = await self._client.post(self._url + path, json=body)
            resp.raise_for_status()
            return resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise SettlementUnknown(f"facilitator {path} failed: {exc!r}") from exc
