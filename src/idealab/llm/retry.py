"""Retrying with exponential backoff and jitter, done here (the SDKs get max_retries=0) so that every
attempt is ours to time, log and count."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, replace

from idealab.llm.pricing import Price
from idealab.llm.types import LLMClient, LLMError, LLMRequest, LLMResponse, TransientLLMError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5  # attempts = max_retries + 1
    base_delay_s: float = 1.0  # first backoff; doubles each retry
    max_delay_s: float = 60.0  # cap on one backoff, a server's retry-after included

    def delay(self, retry_index: int, retry_after_s: float | None) -> float:
        if retry_after_s is not None and retry_after_s >= 0:
            return min(retry_after_s, self.max_delay_s)
        # "equal jitter": half the exponential step is fixed, half random, so parallel callers spread out
        step = min(self.max_delay_s, self.base_delay_s * 2**retry_index)
        return float(step * random.uniform(0.5, 1.0))


class RetryingClient:
    """Wraps a single-attempt client; transient failures are retried, others raised at once."""

    def __init__(self, inner: LLMClient, policy: RetryPolicy, price: Price | None = None) -> None:
        self.inner = inner
        self.policy = policy
        self.price = price  # what the inner client prices its answers at (None: unknown)
        self.provider = inner.provider
        self.model = inner.model

    async def complete(self, request: LLMRequest) -> LLMResponse:
        started = time.monotonic()
        attempts = 0
        unanswered = 0
        while True:
            attempts += 1
            try:
                response = await self.inner.complete(request)
            except TransientLLMError as exc:
                unanswered += exc.unanswered
                if attempts > self.policy.max_retries:
                    raise LLMError(
                        f"{self.provider}:{self.model}: gave up after {attempts} attempts; last error: {exc}",
                        attempts=attempts,
                        unanswered=unanswered,
                    ) from exc
                wait = self.policy.delay(attempts - 1, exc.retry_after_s)
                log.warning(
                    "%s:%s attempt %d failed (%s); retrying in %.2fs",
                    self.provider,
                    self.model,
                    attempts,
                    exc,
                    wait,
                )
                await asyncio.sleep(wait)
                continue
            except LLMError as exc:
                exc.attempts = attempts
                exc.unanswered += unanswered
                raise
            if attempts == 1:
                return response
            return replace(
                response, attempts=attempts, unanswered_attempts=unanswered, latency_s=time.monotonic() - started
            )
