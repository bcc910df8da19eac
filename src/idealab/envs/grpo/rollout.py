"""Rollout engines: vLLM when it is installed (and a GPU is there), plain transformers otherwise.

Both give the same sampling semantics: `generate(prompts, n=, temperature=, top_p=, max_tokens=, stop=)`
returns len(prompts) * n strings, the n samples of each prompt adjacent; sampling is pure temperature /
nucleus sampling (no top-k), at most max_tokens new tokens, cut right after the first `stop` string,
which is kept. Each engine holds its own copy of the weights: the trainer calls `sync(policy)` at the start of
every GRPO step (after that step's evaluation), so an evaluation sees the weights the previous step's
rollouts were sampled with, as in the paper's code.
"""

import copy
import importlib.util
import os

import torch


def truncate_at_stop(text, stop):
    """Cut text just after the first occurrence of stop (kept), as vLLM's include_stop_str_in_output."""
    if stop and stop in text:
        return text[: text.index(stop) + len(stop)]
    return text


class HFEngine:
    """Batched `model.generate` on a copy of the policy, refreshed by `sync` (like vLLM's own weights)."""

    name = "transformers"

    def __init__(self, model, tokenizer, batch_size):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.tokenizer, self.batch_size = tokenizer, batch_size
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    @torch.no_grad()
    def sync(self, policy):
        self.model.load_state_dict(policy.state_dict())

    @torch.no_grad()
    def generate(self, prompts, n=1, temperature=1.0, top_p=1.0, max_tokens=1024, stop=None):
        expanded = [p for p in prompts for _ in range(n)]
        tok, outputs = self.tokenizer, []
        side, tok.padding_side = tok.padding_side, "left"  # decoder-only generation pads on the left
        try:
            for i in range(0, len(expanded), self.batch_size):
                batch = tok(expanded[i : i + self.batch_size], return_tensors="pt", padding=True)
                batch = batch.to(self.model.device)
                out = self.model.generate(
                    **batch,
                    do_sample=True,
                    temperature=temperature,
                    top_p=top_p,
                    top_k=0,  # transformers defaults to top-k 50; vLLM and the paper use none
                    max_new_tokens=max_tokens,
                    stop_strings=[stop] if stop else None,
                    tokenizer=tok,
                    pad_token_id=tok.pad_token_id,
                )
                new = out[:, batch["input_ids"].shape[1] :]  # (B, <= max_tokens)
                texts = tok.batch_decode(new, skip_special_tokens=True)
                outputs += [truncate_at_stop(t, stop) for t in texts]
        finally:
            tok.padding_side = side
        return outputs


class VLLMEngine:
    """A vLLM engine sharing the GPU with training; weights are pushed into it after every step."""

    name = "vllm"

    def __init__(self, model_path, gpu_memory_utilization, seed, dtype="bfloat16"):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # keep the model in this process
        from vllm import LLM

        self.llm = LLM(
            model=str(model_path),
            gpu_memory_utilization=gpu_memory_utilization,
            dtype=dtype,
            seed=seed,
            enable_prefix_caching=True,
        )

    def _engine_model(self):
        # The loaded model object sits at a version-dependent place inside vLLM.
        engine = self.llm.llm_engine
        paths = (
            "model_executor.driver_worker.model_runner.model",  # vLLM 0.x engine
            "model_executor.driver_worker.worker.model_runner.model",  # V1 engine, in-process
            "engine_core.engine_core.model_executor.driver_worker.worker.model_runner.model",
        )
        for path in paths:
            obj = engine
            for attr in path.split("."):
                obj = getattr(obj, attr, None)
                if obj is None:
                    break
            if obj is not None:
                return obj
        raise RuntimeError(f"cannot find the model inside this vLLM version; tried llm_engine.{paths}")

    @torch.no_grad()
    def sync(self, policy):
        self._engine_model().load_weights(policy.state_dict().items())
        if hasattr(self.llm, "reset_prefix_cache"):
            self.llm.reset_prefix_cache()  # cached prefixes were computed with the old weights

    def generate(self, prompts, n=1, temperature=1.0, top_p=1.0, max_tokens=1024, stop=None):
        from vllm import SamplingParams

        params = SamplingParams(
            n=n,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            stop=[stop] if stop else None,
            include_stop_str_in_output=True,
        )
        results = self.llm.generate(prompts, params, use_tqdm=False)
        return [c.text for r in results for c in r.outputs]


def make_engine(choice, policy, tokenizer, model_path, device, batch_size, gpu_memory_utilization, seed):
    """choice: "auto" (vLLM if importable and on CUDA, else transformers), "vllm" or "transformers"."""
    have_vllm = importlib.util.find_spec("vllm") is not None
    if choice == "vllm" or (choice == "auto" and have_vllm and device.startswith("cuda")):
        engine = VLLMEngine(model_path, gpu_memory_utilization, seed)
        engine.sync(policy)
    elif choice in ("auto", "transformers"):
        engine = HFEngine(policy, tokenizer, batch_size)
    else:
        raise ValueError(f"unknown rollout engine {choice!r}; choose auto, vllm or transformers")
    why = "" if choice != "auto" else (" (vLLM not installed)" if not have_vllm else "")
    print(f"rollout engine: {engine.name}{why}", flush=True)
    return engine
