"""HTTP POST: the interchange as the request body, with an idempotency key.

``Idempotency-Key`` is the interchange control number (ISA13, nine digits), the same on
every retry, so a receiver that saw the first attempt succeed can drop the second.
Timeouts, connection errors and 408/425/429/5xx answers are retried by the caller; any
other 4xx is permanent (the receiver refused this interchange). Options: ``url``
(required), ``timeout_s`` (10), ``headers`` (extra request headers), ``token`` (sent as
``Authorization: Bearer``).
"""

from __future__ import annotations

import urllib.error
import urllib.request

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from services.claims.adapters import (
    AdapterContext,
    DeliveryError,
    DeliveryMeta,
    PermanentDeliveryError,
    Receipt,
)

RETRYABLE_STATUS = frozenset({408, 425, 429})
CONTENT_TYPE = "application/edi-x12"


class HttpOptions(BaseModel):
    """Settings of one HTTP adapter."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(pattern=r"^https?://")
    timeout_s: float = Field(default=10.0, gt=0)
    headers: dict[str, str] = {}
    token: SecretStr | None = None


class HttpPostAdapter:
    """POSTs each interchange to ``url``."""

    def __init__(self, context: AdapterContext) -> None:
        if "url" not in context.options:
            raise SystemExit(
                f"payer adapter {context.name!r} (http) needs a url: set "
                f'CLAIMFLOW_CLAIMS__ADAPTERS=\'{{"{context.name}": {{"url": "https://..."}}}}\''
            )
        self.name = context.name
        self.options = HttpOptions.model_validate(dict(context.options))

    def deliver(self, interchange: bytes, meta: DeliveryMeta) -> Receipt:
        """One POST; a 2xx answer is the receipt."""
        headers = {
            **self.options.headers,
            "Content-Type": CONTENT_TYPE,
            "Idempotency-Key": f"{meta.control_number:09d}",
            "X-Claimflow-Payer-Id": meta.payer_id,
            "X-Claimflow-Transaction": meta.transaction,
            "X-Claimflow-Claims": str(len(meta.claim_ids)),
        }
        if self.options.token is not None:
            headers["Authorization"] = f"Bearer {self.options.token.get_secret_value()}"
        request = urllib.request.Request(
            self.options.url, data=interchange, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.options.timeout_s) as response:
                status = response.status
                body = response.read(500).decode("utf-8", "replace").strip()
                where = response.headers.get("Location") or ""
        except urllib.error.HTTPError as exc:
            reason = f"HTTP {exc.code} from {self.options.url}: {exc.reason}"
            if exc.code in RETRYABLE_STATUS or exc.code >= 500:
                raise DeliveryError(reason) from exc
            raise PermanentDeliveryError(reason) from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise DeliveryError(f"POST {self.options.url} failed: {exc}") from exc
        return Receipt(self.name, f"HTTP {status} {where or self.options.url}", body[:200])
