"""What prompt caching saves on the implementer's calls: the same request mix priced with and without it.

The request mix is built from the real implement prompts of the charlm environment (its codebase and rules,
then one idea each) the way the LLM implementer sends them: `--samples` first attempts per idea in
parallel, some of them revised once or twice (the revision repeats the first prompt, then the answer and
the error), at most `--concurrency` calls in flight. The calls go through idealab's real clients and
LLMService to the loopback fake provider (tests/fakeprovider.py) with its prompt-cache simulation on, which
computes usage from each prompt (4 bytes per token) as the providers do, answering after a delay so
that calls overlap as they do in a run: Anthropic reads or writes the
prefix up to the cache breakpoint, OpenAI reads the longest prefix seen before in 128-token blocks from
1,024 tokens; an entry is usable only once the call that wrote it is answered, so parallel first calls miss.
Costs are priced by genai-prices; "without caching" is the same mix with no breakpoint (Anthropic) or with
cached tokens priced as uncached (OpenAI, whose caching is automatic).

    python benchmarks/prompt_cache.py [--env charlm] [--ideas 24] [--samples 4] [--concurrency 16] [--seed 0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fakeprovider import FakeProvider, Reply  # noqa: E402
from idealab.ideators.prompting import implement_prompt, implement_prompt_stable_prefix, revise_prompt  # noqa: E402
from idealab.llm import CallRecord, LLMRequest, LLMService, Message, make_client, parse_model_spec  # noqa: E402
from idealab.llm.pricing import resolve_price  # noqa: E402
from idealab.manifest import load_manifest, resolve_env  # noqa: E402

HUNK = "@@ -1,3 +1,3 @@\n-a\n+b\n"
ANSWER = "Here is the change.\n\n```diff\n--- a/train.py\n+++ b/train.py\n" + HUNK * 40 + "```\n"
_CLIENTS: list[object] = []
LATENCY_S = 0.3  # of every fake answer (real ones take tens of seconds; what matters is that calls overlap)
ERROR = "The change could not be applied: hunk 2 does not match the file at line 118."


@dataclass(frozen=True)
class Mix:
    """Per idea: how many attempts each sample makes (1 = accepted at once)."""

    lines: tuple[tuple[int, ...], ...]

    @classmethod
    def draw(cls, ideas: int, samples: int, seed: int) -> Mix:
        rng = random.Random(seed)
        # a sample is accepted at once 60% of the time, after one revision 30%, after two 10%
        return cls(tuple(tuple(rng.choices((1, 2, 3), (6, 3, 1))[0] for _ in range(samples)) for _ in range(ideas)))

    @property
    def calls(self) -> int:
        return sum(sum(line) for line in self.lines)


def ideas(count: int) -> list[str]:
    topics = ("learning-rate warmup", "weight tying", "RMSNorm", "rotary embeddings", "label smoothing",
              "gradient clipping", "dropout", "a wider MLP", "QK normalisation", "a cosine schedule")  # fmt: skip
    return [f"[Experiment] Idea {i}: try {topics[i % len(topics)]} with setting {i}. [End]" for i in range(count)]


async def run_mix(
    env: str, spec: str, server: FakeProvider, mix: Mix, concurrency: int, cache: bool
) -> list[CallRecord]:
    base = server.anthropic_base_url if spec.startswith("anthropic:") else server.openai_base_url
    client = make_client(spec, base_url=base, max_retries=0)
    _CLIENTS.append(client)  # kept until exit: a client collected after its event loop closed complains
    records: list[CallRecord] = []
    service = LLMService(client, max_concurrency=concurrency, recorder=records.append, price=client.price)
    manifest = load_manifest(resolve_env(env))
    prefix = implement_prompt_stable_prefix(manifest, manifest.root) if cache else 0

    async def sample(idea: str, attempts: int) -> None:
        system, user = implement_prompt(manifest, manifest.root, idea)
        first = Message("user", user, cache_prefix=prefix)
        messages: tuple[Message, ...] = (first,)
        for _ in range(attempts):
            await service.complete(LLMRequest(messages, system=system, max_tokens=10000), role="implementer")
            messages = (first, Message("assistant", ANSWER), Message("user", revise_prompt(ERROR)))

    async def implement(idea: str, line: tuple[int, ...]) -> None:
        await asyncio.gather(*(sample(idea, attempts) for attempts in line))

    await asyncio.gather(*(implement(idea, line) for idea, line in zip(ideas(len(mix.lines)), mix.lines, strict=True)))
    return records


def measure(env: str, spec: str, mix: Mix, concurrency: int, cache: bool) -> tuple[float, float, int, int, int]:
    """(cost with caching, cost without, prompt tokens, cache reads, cache writes) of the mix."""
    with FakeProvider(prompt_cache=True) as server:
        endpoint = "messages" if spec.startswith("anthropic:") else "chat"
        # each answer takes a while, as generation does: the calls in flight together all miss the cache
        server.add(endpoint, *[Reply.answer(ANSWER, delay_s=LATENCY_S)] * mix.calls)
        records = asyncio.run(run_mix(env, spec, server, mix, concurrency, cache))
    provider, model = parse_model_spec(spec)
    price = resolve_price(provider, model, local_provider=False, loopback=False)
    assert price is not None
    cost = sum(r.cost_usd or 0.0 for r in records)
    uncached = sum(price.cost(r.input_tokens, r.output_tokens) for r in records)
    tokens = sum(r.input_tokens for r in records)
    reads = sum(r.cached_input_tokens for r in records)
    return cost, uncached, tokens, reads, sum(r.cache_write_tokens for r in records)


def main() -> None:
    warnings.simplefilter("ignore", DeprecationWarning)  # the SDK warns of model retirement dates
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="charlm", help="environment whose implement prompts are sent")
    parser.add_argument("--ideas", type=int, default=24)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=16)  # implementer_max_calls
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("ANTHROPIC_API_KEY", "benchmark")  # the fake provider ignores keys
    os.environ.setdefault("OPENAI_API_KEY", "benchmark")
    mix = Mix.draw(args.ideas, args.samples, args.seed)
    print(f"{args.env} implement prompts: {args.ideas} ideas x {args.samples} samples, {mix.calls} calls "
          f"(revisions included), {args.concurrency} in flight")  # fmt: skip
    columns = ("prompt tok", "cache read", "cache write", "$ cached", "$ uncached", "saving")
    print(f"{'model':30} " + " ".join(f"{c:>11}" for c in columns))
    for spec in ("anthropic:claude-sonnet-4-6", "openai:gpt-5"):
        cached_cost, uncached_cost, tokens, reads, writes = measure(args.env, spec, mix, args.concurrency, True)
        if spec.startswith("anthropic:"):  # explicit caching: the same mix sent again without the breakpoint
            uncached_cost = measure(args.env, spec, mix, args.concurrency, False)[0]
        saving = 1 - cached_cost / uncached_cost
        values = (f"{tokens}", f"{reads}", f"{writes}", f"{cached_cost:.4f}", f"{uncached_cost:.4f}", f"{saving:.1%}")
        print(f"{spec:30} " + " ".join(f"{v:>11}" for v in values))


if __name__ == "__main__":
    main()
