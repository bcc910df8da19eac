"""What the ideator and implementer call: a concurrency limit, a cost cap and a record of every call."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from idealab.llm.pricing import Price
from idealab.llm.types import (
    BudgetExhausted,
    CallRecord,
    LLMClient,
    LLMError,
    LLMRequest,
    LLMResponse,
    estimate_tokens,
)

log = logging.getLogger(__name__)

Recorder = Callable[[CallRecord], None]
# What a caller notes about an answer (e.g. how many ideas it held), recorded with the call.
Annotator = Callable[[LLMResponse], Mapping[str, Any]]


class LLMService:
    """Calls `client` at most `max_concurrency` at a time, or per role where `role_limits` names one.

    A role in `role_limits` (e.g. "ideator", "implementer") has slots of its own, so one role's calls never
    queue behind another's: the next epoch's ideation proceeds while implementations fill theirs. Roles not
    named there share `max_concurrency` slots.

    The cost cap is checked when a call gets its slot: once `spent_usd >= max_cost_usd`, `complete` raises
    BudgetExhausted without calling (the caller ends the run cleanly). Calls already in flight finish, so
    the spend can pass the cap by at most as many calls as there are slots. `spent_usd` seeds the spend of
    a resumed run. A call cancelled in flight (another implementation sample won) is billed by the provider
    for its prompt though no usage comes back: it is recorded and counted at `price` for an estimate of
    the prompt's tokens, as are attempts that timed out. Calls whose model has no known price add nothing
    to the spend (a warning says so; the LLM builder refuses a cost cap on such a model at start).
    """

    def __init__(
        self,
        client: LLMClient,
        *,
        max_concurrency: int = 8,
        role_limits: Mapping[str, int] | None = None,
        max_cost_usd: float | None = None,
        recorder: Recorder | None = None,
        spent_usd: float = 0.0,
        price: Price | None = None,
    ) -> None:
        limits = {"max_concurrency": max_concurrency, **(role_limits or {})}
        for name, limit in limits.items():
            if limit < 1:
                raise ValueError(f"the concurrency limit of {name} must be at least 1, got {limit}")
        self.client = client
        self.max_cost_usd = max_cost_usd
        self.recorder = recorder
        self.price = price
        self._spent = spent_usd
        self._slots = asyncio.Semaphore(max_concurrency)
        self._role_slots = {role: asyncio.Semaphore(limit) for role, limit in (role_limits or {}).items()}
        self._warned_unpriced = False

    @property
    def spent_usd(self) -> float:
        return self._spent

    @property
    def exhausted(self) -> bool:
        return self.max_cost_usd is not None and self._spent >= self.max_cost_usd

    async def complete(
        self, request: LLMRequest, *, role: str, idea_id: int | None = None, annotate: Annotator | None = None
    ) -> LLMResponse:
        """The answer to `request`; `annotate(answer)` is stored with the call's record."""
        async with self._role_slots.get(role, self._slots):
            if self.max_cost_usd is not None and self._spent >= self.max_cost_usd:
                raise BudgetExhausted(self._spent, self.max_cost_usd)
            started = time.monotonic()
            try:
                response = await self.client.complete(request)
            except LLMError as exc:
                call = self._call(
                    request, role, idea_id, time.monotonic() - started, error=str(exc), attempts=exc.attempts
                )
                self._record(self._billed_unanswered(request, call, exc.unanswered))
                raise
            except asyncio.CancelledError:
                call = self._call(request, role, idea_id, time.monotonic() - started, error="cancelled in flight")
                self._record(self._billed_unanswered(request, replace(call, cancelled=True), 1))
                raise
            call = self._call(request, role, idea_id, time.monotonic() - started, response=response)
            # Counted before the slot is released, so the next caller's budget check sees this spend.
            call = self._billed_unanswered(request, call, response.unanswered_attempts)
        if annotate is not None:
            call = replace(call, extra=dict(annotate(response)))
        self._record(call)
        return response

    def _billed_unanswered(self, request: LLMRequest, call: CallRecord, unanswered: int) -> CallRecord:
        """`call` with the estimated prompts of its `unanswered` attempts added, and its cost counted."""
        if unanswered == 0:
            if call.response is not None:  # a refused request (HTTP error) is not billed
                self._count(call.cost_usd)
            return call
        tokens = estimate_tokens(request.prompt_text()) * unanswered
        extra = self.price.cost(tokens, 0) if self.price is not None else None
        answered = call.cost_usd if call.response is not None else 0.0
        cost = None if extra is None or answered is None else answered + extra
        self._count(cost)
        return replace(
            call, input_tokens=call.input_tokens + tokens, cost_usd=cost, unanswered_attempts=unanswered, estimated=True
        )

    def _count(self, cost_usd: float | None) -> None:
        if cost_usd is None:
            self._warn_unpriced()
        else:
            self._spent += cost_usd

    def _warn_unpriced(self) -> None:
        if self.max_cost_usd is not None and not self._warned_unpriced:
            self._warned_unpriced = True
            log.warning(
                "%s:%s has no known price: its calls do not count toward the $%.2f cap "
                "(add it to a pricing file, see docs/llm.md)",
                self.client.provider,
                self.client.model,
                self.max_cost_usd,
            )

    def _call(
        self,
        request: LLMRequest,
        role: str,
        idea_id: int | None,
        latency_s: float,
        *,
        response: LLMResponse | None = None,
        error: str | None = None,
        attempts: int = 1,
    ) -> CallRecord:
        return CallRecord(
            role=role,
            provider=self.client.provider,
            model=self.client.model,
            prompt=request.prompt_json(),
            response=response.text if response else None,
            input_tokens=response.input_tokens if response else 0,
            output_tokens=response.output_tokens if response else 0,
            cost_usd=response.cost_usd if response else None,
            latency_s=latency_s,
            error=error,
            idea_id=idea_id,
            attempts=response.attempts if response else attempts,
            cached_input_tokens=response.cached_input_tokens if response else 0,
            cache_write_tokens=response.cache_write_tokens if response else 0,
            thinking_tokens=response.thinking_tokens if response else 0,
        )

    def _record(self, call: CallRecord) -> None:
        if self.recorder is not None:
            self.recorder(call)
