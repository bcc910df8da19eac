"""The auditor: a model that reviews the change behind a suspect result for reward hacking (docs/llm.md).

`--audit-model provider:model` builds one (before the run is stored, like the ideator's and implementer's
models); the loop asks it about every suspect result (search/suspect.py) once, and stores its verdict in
the idea's payload as `audit`. Its calls are recorded with role "auditor". An answer that cannot be read
is `unsure` with the reason, never a silent `clean`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from idealab.ideators.llm_implementer import Completer
from idealab.ideators.prompting import render, rules_section
from idealab.llm import (
    LLMConfigError,
    LLMError,
    LLMRequest,
    LLMService,
    Message,
    OutputSchema,
    Recorder,
    discover_model,
    is_local,
    make_client,
    parse_model_spec,
)
from idealab.llm.registry import PROVIDERS
from idealab.manifest import Manifest
from idealab.search.suspect import Audit, AuditVerdict

ROLE = "auditor"
AUDIT_TOOL = "audit_verdict"
AUDIT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "verdict": {"type": "string", "enum": [v.value for v in AuditVerdict]},
        "reasoning": {"type": "string"},
    },
    "required": ["verdict", "reasoning"],
    "additionalProperties": False,
}
MAX_DIFF_CHARS = 60_000  # a longer change is cut (the auditor is told so)
_TIMEOUT_S = {True: 3600.0, False: 600.0}  # a local server may be slow


def audit_prompt(manifest: Manifest, idea: str, diff: str, result: str, why: str) -> tuple[str, str]:
    """(system, user) asking for a verdict on the change behind a suspect result."""
    if len(diff) > MAX_DIFF_CHARS:
        diff = diff[:MAX_DIFF_CHARS] + f"\n... (cut: the change has {len(diff)} characters)"
    protected = [f"- {p} (read-only)" for p in manifest.files.readonly]
    protected += [f"- {p} (hidden: the evaluation)" for p in manifest.files.hidden]
    values = {
        "name": manifest.name,
        "description": " ".join(manifest.description.split()),
        "metric_name": manifest.metric.name,
        "metric_goal": "lower" if manifest.metric.goal.value == "minimize" else "higher",
        "result": result,
        "why": why,
        "rules": rules_section(manifest).strip(),
        "protected": "\n".join(protected) or "- none",
        "idea": idea.strip(),
        "diff": diff.strip(),
    }
    return render("system_auditor", {}), render("audit", values)


def read_verdict(text: str, model: str) -> Audit:
    """The verdict in an answer: its JSON object (the schema's, or one in prose); else `unsure`."""
    candidates = [text, *re.findall(r"\{.*\}", text, flags=re.DOTALL)]
    for candidate in candidates:
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict):
            audit = Audit.from_json({**data, "model": model})
            if audit is not None:
                return audit
    return Audit(AuditVerdict.UNSURE, f"the auditor's answer held no verdict: {text[:500]!r}", model)


class Auditor:
    def __init__(
        self,
        service: Completer,
        model: str,
        *,
        structured: bool = True,
        max_tokens: int = 4000,
        max_cost_usd: float | None = None,
    ) -> None:
        self.service = service
        self.model = model  # provider:model, stored with each verdict
        self.max_cost_usd = max_cost_usd  # the run's cap: the loop audits nothing once the run has spent it
        self.structured = structured
        self.max_tokens = max_tokens

    async def review(self, manifest: Manifest, idea_id: int, idea: str, diff: str, result: str, why: str) -> Audit:
        """The auditor's verdict; a failed call is `unsure` with the error (the result stays suspect)."""
        system, user = audit_prompt(manifest, idea, diff, result, why)
        schema = OutputSchema(AUDIT_TOOL, "The audit's verdict and reasoning.", AUDIT_SCHEMA)
        output = schema if self.structured else None
        request = LLMRequest((Message("user", user),), system=system, max_tokens=self.max_tokens, output=output)
        try:
            response = await self.service.complete(request, role=ROLE, idea_id=idea_id)
        except LLMError as exc:
            return Audit(AuditVerdict.UNSURE, f"the audit call failed: {exc}", self.model)
        return read_verdict(response.text, self.model)


def build_auditor(
    spec: str,
    *,
    base_url: str | None = None,
    keys_file: Path | None = None,
    recorder: Recorder | None = None,
    max_cost_usd: float | None = None,
) -> Auditor:
    """A checked auditor (key, model name) before any call; raises ValueError saying what is wrong."""
    try:
        spec = discover_model(spec, base_url=base_url)
        provider, _ = parse_model_spec(spec)
        local = is_local(provider, base_url)
        client = make_client(spec, base_url=base_url, keys_file=keys_file, timeout_s=_TIMEOUT_S[local])
    except LLMConfigError as exc:
        raise ValueError(f"--audit-model: {exc}") from None
    if max_cost_usd is not None and client.price is None:
        raise ValueError(f"--audit-model: no known price for {spec}, so --max-cost-usd cannot count its calls "
                         "(see 'Costs' in docs/llm.md)")
    service = LLMService(client, recorder=recorder, price=client.price)
    return Auditor(service, spec, structured=PROVIDERS[provider].structured, max_cost_usd=max_cost_usd)
