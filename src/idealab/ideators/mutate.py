"""The built-in `mutate` ideator: ideas are changes of knobs, no LLM needed.

Explore draws new values at random inside the knobs' ranges; exploit perturbs or recombines the best
configurations so far. Every idea is a one-sentence text plus a real unified diff of the assignment
lines, which then goes through the same apply-and-run path as an LLM's diff. A configuration already
proposed in the run (compared as written into the file) is never proposed again: when none is left to
find, fewer ideas come back.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from idealab.ideators import knobs as kn
from idealab.ideators.base import IdeaKind, IdeaProposal, IdeationRequest, PastIdea
from idealab.ideators.ready import ReadyDiffImplementer
from idealab.ideators.registry import Built, IdeatorOptions
from idealab.manifest import Manifest
from idealab.patching import diff_texts
from idealab.search.journal import Journal

Config = dict[str, kn.Number]
Key = tuple[tuple[str, str], ...]
SAMPLE_TRIES = 50  # draws per idea before concluding that no unproposed configuration is to be found


class MutateIdeator:
    name = "mutate"

    def __init__(self, max_knobs_per_idea: int = 2, perturb_scale: float = 0.15) -> None:
        self.max_knobs = max_knobs_per_idea
        self.perturb_scale = perturb_scale

    async def propose(self, manifest: Manifest, request: IdeationRequest) -> list[IdeaProposal]:
        if not manifest.knobs:
            raise ValueError(f"environment {manifest.name!r} declares no [knobs]: the mutate ideator needs some")
        rng = random.Random(request.seed)
        texts = kn.knob_files(manifest)
        base = kn.read_values(manifest, texts)
        payloads = [*(p.payload for p in request.history), *request.proposed]
        seen = {_key(manifest, _config_of(base, payload)) for payload in payloads} | {_key(manifest, base)}
        ranked = _ranked(manifest, request)
        proposals: list[IdeaProposal] = []
        for _ in range(request.count):
            for _try in range(SAMPLE_TRIES):
                if request.kind is IdeaKind.EXPLOIT and ranked:
                    changes, parents, how = self._exploit(manifest, base, ranked, rng)
                else:
                    changes, parents, how = self._explore(manifest, base, rng), [], "explore"
                key = _key(manifest, {**base, **changes})
                if key not in seen:
                    seen.add(key)
                    proposals.append(self._proposal(manifest, texts, base, changes, parents, how))
                    break
        return proposals

    # -- strategies ------------------------------------------------------------------------------------

    def _explore(self, manifest: Manifest, base: Config, rng: random.Random) -> Config:
        names = sorted(manifest.knobs)
        chosen = rng.sample(names, k=rng.randint(1, min(self.max_knobs, len(names))))
        changes: Config = {}
        for name in chosen:
            value = kn.from_unit(manifest.knobs[name], rng.random())
            if value != base[name]:
                changes[name] = value
        return changes

    def _exploit(
        self, manifest: Manifest, base: Config, ranked: list[tuple[PastIdea, Config]], rng: random.Random
    ) -> tuple[Config, list[int], str]:
        top = ranked[: max(2, len(ranked) // 2)]
        if len(top) >= 2 and rng.random() < 0.4:
            (a, ca), (b, cb) = rng.sample(top, 2)
            child = {name: (ca if rng.random() < 0.5 else cb)[name] for name in manifest.knobs}
            return _diff_config(base, child), [a.id, b.id], "recombine"
        parent, config = top[0] if rng.random() < 0.5 else rng.choice(top)
        child = dict(config)
        name = rng.choice(sorted(manifest.knobs))
        knob = manifest.knobs[name]
        u = kn.to_unit(knob, float(child[name])) + rng.gauss(0.0, self.perturb_scale)
        child[name] = kn.from_unit(knob, u)
        return _diff_config(base, child), [parent.id], "perturb"

    def _proposal(
        self,
        manifest: Manifest,
        texts: Mapping[str, str],
        base: Config,
        changes: Config,
        parents: list[int],
        how: str,
    ) -> IdeaProposal:
        new_texts = kn.set_values(manifest, texts, changes)
        parts = [
            f"{name} from {kn.format_value(manifest.knobs[name], base[name])} "
            f"to {kn.format_value(manifest.knobs[name], value)}"
            for name, value in sorted(changes.items())
        ]
        origin = f" (refining idea {', '.join(f'#{p}' for p in parents)})" if parents else ""
        text = f"Change {' and '.join(parts) or 'nothing'}{origin}."
        payload: dict[str, Any] = {"knobs": dict(changes), "parents": parents, "strategy": how}
        return IdeaProposal(text=text, diff=diff_texts(dict(texts), new_texts), payload=payload)


def _config_of(base: Config, payload: Mapping[str, Any]) -> Config:
    return {**base, **dict(payload.get("knobs", {}))}


def _diff_config(base: Config, config: Config) -> Config:
    return {name: value for name, value in config.items() if value != base[name]}


def _key(manifest: Manifest, config: Mapping[str, kn.Number]) -> Key:
    """A configuration as it is written into the file: values that print alike are the same experiment."""
    return tuple(sorted((k, kn.format_value(manifest.knobs[k], v)) for k, v in config.items() if k in manifest.knobs))


def _ranked(manifest: Manifest, request: IdeationRequest) -> list[tuple[PastIdea, Config]]:
    """The scored ideas shown (the winners, or the best so far), best first, with their configurations."""
    base = kn.read_values(manifest)
    journal = Journal.of(request.history, manifest.metric.goal, request.baseline, request.evidence)
    return [(p, _config_of(base, p.payload)) for p in journal.ranked()]


def build(options: IdeatorOptions) -> Built:
    """The registry's builder: knob ideas come with their diff, so the implementer only applies it."""
    return Built(MutateIdeator(), ReadyDiffImplementer())
