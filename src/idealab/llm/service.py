"""What the ideator and implementer call: a concurrency limit, a cost cap and a record of every call."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from idealab.llm.types import BudgetExhausted, CallRecord, LLMClient, LLMError, LLMRequest, LLMResponse

log = logging.getLogger(__name__)

Recorder = Callable[[CallRecord], None]


class LLMService:
    """Calls `client` at most `max_concurrency` at a time, or per role where `role_limits` names one.

    A role in `role_limits` (e.g. "ideator", "implementer") has slots of its own, so one role's calls never
    queue behind another's: the next epoch's ideation proceeds while implementations fill theirs. Roles not
    named there share `max_concurrency` slots.

    The cost cap is checked when a call gets its slot: once `spent_usd >= max_cost_usd`, `complete` raises
    BudgetExhausted without calling (the caller ends the run cleanly). Calls already in flight finish, so
    the spend can pass the cap by at most as many calls as there are slots. `spent_usd` seeds the spend of
    a resumed run. Calls whose model has no known price add nothing to the spend (a warning says so).
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
    ) -> None:
        limits = {"max_concurrency": max_concurrency, **(role_limits or {})}
        for name, limit in limits.items():
            if limit < 1:
                raise ValueError(f"the concurrency limit of {name} must be at least 1, got {limit}")
        self.client = client
        self.max_cost_usd = max_cost_usd
        self.recorder = recorder
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

    async def complete(self, request: LLMRequest, *, role: str, idea_id: int | None = None) -> LLMResponse:
        async with self._role_slots.get(role, self._slots):
            if self.max_cost_usd is not None and self._spent >= self.max_cost_usd:
                raise BudgetExhausted(self._spent, self.max_cost_usd)
            started = time.monotonic()
            try:
                response = await self.client.complete(request)
            except LLMError as exc:
                self._record(request, role, idea_id, None, str(exc), exc.attempts, time.monotonic() - started)
                raise
            # Counted before the slot is released, so the next caller's budget check sees this spend.
            if response.cost_usd is None:
                self._warn_unpriced()
            else:
                self._spent += response.cost_usd
        self._record(request, role, idea_id, response, None, response.attempts, time.monotonic() - started)
        return response

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

    def _record(
        self,
        request: LLMRequest,
        role: str,
        idea_id: int | None,
        response: LLMResponse | None,
        error: str | None,
        attempts: int,
        latency_s: float,
    ) -> None:
        if self.recorder is None:
            return
        self.recorder(
            CallRecord(
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
                attempts=attempts,
                cached_input_tokens=response.cached_input_tokens if response else 0,
                thinking_tokens=response.thinking_tokens if response else 0,
            )
        )
