"""The GRPO environment's parts: advantages, losses, masking, tokenisation, overrides, engines."""

from __future__ import annotations

import math

import pytest
import torch

from idealab.manifest import Goal, Reduce, load_manifest
from test_grpo_util import ENV_DIR, load_env_modules, tiny_tokenizer


@pytest.fixture(scope="module")
def env():  # type: ignore[no-untyped-def]
    return load_env_modules(ENV_DIR)


# ------------------------------------------------------------------------------------- advantages


def test_advantages_are_group_normalised_with_unbiased_std(env) -> None:  # type: ignore[no-untyped-def]
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    adv = env.grpo.group_normalized_advantages(rewards, group_size=4, eps=1e-6)
    std = math.sqrt(1 / 3)  # group 1: mean 0.5, unbiased std sqrt(4 * 0.25 / 3)
    expected = [0.5 / (std + 1e-6), -0.5 / (std + 1e-6), -0.5 / (std + 1e-6), 0.5 / (std + 1e-6)]
    assert adv[:4].tolist() == pytest.approx(expected, rel=1e-6)
    assert adv[4:].tolist() == [0.0, 0.0, 0.0, 0.0]  # equal rewards: std 0, eps keeps it finite


def test_advantages_epsilon_and_no_std_option(env) -> None:  # type: ignore[no-untyped-def]
    rewards = torch.tensor([2.0, 0.0])
    adv = env.grpo.group_normalized_advantages(rewards, group_size=2, eps=0.5)
    std = math.sqrt(2.0)
    assert adv.tolist() == pytest.approx([1 / (std + 0.5), -1 / (std + 0.5)], rel=1e-6)
    plain = env.grpo.group_normalized_advantages(rewards, group_size=2, normalize_by_std=False)
    assert plain.tolist() == [1.0, -1.0]


# ----------------------------------------------------------------------------------------- losses


def test_no_baseline_and_reinforce_losses(env) -> None:  # type: ignore[no-untyped-def]
    log_probs = torch.tensor([[-1.0, -2.0], [-0.5, -0.25]])
    loss, _ = env.grpo.per_token_loss(log_probs, "no_baseline", rewards=torch.tensor([1.0, 0.0]))
    assert loss.tolist() == [[1.0, 2.0], [0.0, 0.0]]
    loss, _ = env.grpo.per_token_loss(log_probs, "reinforce_with_baseline", advantages=torch.tensor([0.5, -2.0]))
    assert loss.tolist() == [[0.5, 1.0], [-1.0, -0.5]]


def test_grpo_clip_loss_and_clipping(env) -> None:  # type: ignore[no-untyped-def]
    # ratios 1.5 and 0.5 for a positive and a negative advantage; clip range 0.2
    old = torch.zeros(2, 2)
    log_probs = torch.log(torch.tensor([[1.5, 0.5], [1.5, 0.5]]))
    adv = torch.tensor([1.0, -1.0])
    loss, clipped = env.grpo.per_token_loss(log_probs, "grpo_clip", advantages=adv, old_log_probs=old, clip=0.2)
    # A=+1: -min(1.5, 1.2) = -1.2 (clipped), -min(0.5, 0.8) = -0.5
    # A=-1: -min(-1.5, -1.2) = 1.5,          -min(-0.5, -0.8) = 0.8 (clipped)
    assert torch.allclose(loss, torch.tensor([[-1.2, -0.5], [1.5, 0.8]]), atol=1e-6)
    assert clipped.tolist() == [[True, False], [False, True]]


def test_grpo_clip_gradient_is_zero_where_clipped(env) -> None:  # type: ignore[no-untyped-def]
    log_probs = torch.log(torch.tensor([[1.5, 1.1]])).requires_grad_()
    loss, _ = env.grpo.per_token_loss(
        log_probs, "grpo_clip", advantages=torch.tensor([1.0]), old_log_probs=torch.zeros(1, 2), clip=0.2
    )
    loss.sum().backward()
    assert log_probs.grad is not None
    assert torch.allclose(log_probs.grad, torch.tensor([[0.0, -1.1]]), atol=1e-6)


def test_unknown_loss_names_the_choices(env) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="grpo_clip"):
        env.grpo.per_token_loss(torch.zeros(1, 1), "ppo")


def test_masked_mean(env) -> None:  # type: ignore[no-untyped-def]
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1, 1, 0], [0, 0, 1]])
    assert env.grpo.masked_mean(values, mask).item() == pytest.approx((1 + 2 + 6) / 3)
    assert env.grpo.masked_mean(values, mask, dim=1).tolist() == pytest.approx([1.5, 6.0])
    assert env.grpo.masked_mean(values, mask, dim=0).tolist()[:2] == pytest.approx([1.0, 2.0])


def test_microbatch_loss_is_one_mean_over_all_response_tokens(env) -> None:  # type: ignore[no-untyped-def]
    loss_tok = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # the paper's reduction: (1 + 2 + 4) / 3 tokens, not the mean of per-sequence means (1.5 + 4) / 2
    got = env.grpo.microbatch_loss(loss_tok, mask)
    assert got.item() == pytest.approx((7 / 3) / env.grpo.GRAD_ACCUM)


def test_empty_responses_give_a_finite_loss(env) -> None:  # type: ignore[no-untyped-def]
    loss_tok = torch.tensor([[1.0, 2.0], [9.0, 9.0]], requires_grad=True)
    one_empty = env.grpo.microbatch_loss(loss_tok, torch.tensor([[1, 1], [0, 0]]))
    assert one_empty.item() == pytest.approx(1.5 / env.grpo.GRAD_ACCUM)  # the empty one adds nothing
    all_empty = env.grpo.microbatch_loss(loss_tok, torch.zeros(2, 2, dtype=torch.long))
    all_empty.backward()
    assert all_empty.item() == 0.0 and loss_tok.grad is not None and not loss_tok.grad.any()


class _TinyPolicy(torch.nn.Module):
    """log p(token) = logits[token] for every position: a model whose gradients are easy to write down."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.logits = torch.nn.Parameter(torch.zeros(vocab))

    def forward(self, input_ids: torch.Tensor):  # type: ignore[no-untyped-def]
        logits = self.logits.expand(*input_ids.shape, -1)
        return type("Out", (), {"logits": logits})()


class _RecordingSGD(torch.optim.SGD):
    def __init__(self, params) -> None:  # type: ignore[no-untyped-def]
        super().__init__(params, lr=0.0)
        self.grads: list[torch.Tensor] = []

    def step(self, closure=None):  # type: ignore[no-untyped-def]
        self.grads.append(self.param_groups[0]["params"][0].grad.clone())
        return super().step(closure)


def _train(env, policy, responses, rewards, done=0):  # type: ignore[no-untyped-def]
    tok = tiny_tokenizer()
    opt = _RecordingSGD(policy.parameters())
    prompts = ["a"] * len(responses)
    out = env.grpo.train_on_rollouts(policy, opt, tok, prompts, responses, rewards, rewards, "cpu", done)
    return opt, out


def test_training_step_gradient_is_the_hand_computed_one_and_not_clipped(env) -> None:  # type: ignore[no-untyped-def]
    g = env.grpo
    saved = (g.LOSS_TYPE, g.MICRO_BATCH, g.GRAD_ACCUM)
    g.LOSS_TYPE, g.MICRO_BATCH, g.GRAD_ACCUM = "reinforce_with_baseline", 2, 1
    try:
        assert g.GRAD_CLIP == 0  # the paper's setting: no clipping
        policy = _TinyPolicy(len(tiny_tokenizer()))
        # two sequences in one micro-batch: responses of 3 and 1 tokens, advantages +10 and -10
        opt, (_, _, steps, done) = _train(env, policy, ["b b b", "c"], torch.tensor([10.0, -10.0]))
        assert steps == 1 and done == 1
        # loss = -(10 * 3 log p(b) - 10 * log p(c)) / 4 tokens, log p = logits - logsumexp(logits)
        vocab = len(tiny_tokenizer())
        b, c = (tiny_tokenizer().convert_tokens_to_ids(t) for t in ["b", "c"])
        p = torch.full((vocab,), 1 / vocab)
        want = -(10 * 3 * (torch.eye(vocab)[b] - p) - 10 * (torch.eye(vocab)[c] - p)) / 4
        assert torch.allclose(opt.grads[0], want, atol=1e-6)
        assert want.norm() > 1.0  # clipping at 1.0 would have shrunk it
    finally:
        g.LOSS_TYPE, g.MICRO_BATCH, g.GRAD_ACCUM = saved


def test_an_empty_response_trains_without_divergence(env) -> None:  # type: ignore[no-untyped-def]
    g = env.grpo
    saved = (g.LOSS_TYPE, g.MICRO_BATCH, g.GRAD_ACCUM)
    g.LOSS_TYPE, g.MICRO_BATCH, g.GRAD_ACCUM = "reinforce_with_baseline", 1, 2
    try:
        policy = _TinyPolicy(len(tiny_tokenizer()))
        _, (loss, _, steps, _) = _train(env, policy, ["", "b"], torch.tensor([1.0, -1.0]))
        assert math.isfinite(loss) and steps == 1
    finally:
        g.LOSS_TYPE, g.MICRO_BATCH, g.GRAD_ACCUM = saved


def test_a_partial_accumulation_group_carries_into_the_next_step(env) -> None:  # type: ignore[no-untyped-def]
    g = env.grpo
    saved = (g.LOSS_TYPE, g.MICRO_BATCH, g.GRAD_ACCUM)
    g.LOSS_TYPE, g.MICRO_BATCH, g.GRAD_ACCUM = "reinforce_with_baseline", 1, 3
    try:
        policy = _TinyPolicy(len(tiny_tokenizer()))
        rewards = torch.tensor([1.0, -1.0, 1.0, -1.0])
        _, (_, _, steps, done) = _train(env, policy, ["b", "c", "b", "c"], rewards)
        assert (steps, done) == (1, 4)  # one group of 3; the 4th micro-batch waits
        _, (_, _, steps, done) = _train(env, policy, ["b", "c"], rewards[:2], done)
        assert (steps, done) == (1, 6)
    finally:
        g.LOSS_TYPE, g.MICRO_BATCH, g.GRAD_ACCUM = saved


# ----------------------------------------------------------------------------------- tokenisation


def test_response_mask_covers_exactly_the_response_tokens(env) -> None:  # type: ignore[no-untyped-def]
    tok = tiny_tokenizer()
    out = env.grpo.tokenize_prompt_and_output(["a b c", "a"], ["d e", "b c d"], tok)
    ids, labels, mask = out["input_ids"], out["labels"], out["response_mask"]
    assert ids.shape == labels.shape == mask.shape == (2, 4)  # longest: 3 + 2 = 4 + 1 = 5 tokens, shifted
    a, b, c, d, e, pad = (tok.convert_tokens_to_ids(t) for t in ["a", "b", "c", "d", "e", "[PAD]"])
    assert ids[0].tolist() == [a, b, c, d] and labels[0].tolist() == [b, c, d, e]
    assert mask[0].tolist() == [0, 0, 1, 1]  # labels d and e are the response
    assert labels[1].tolist() == [b, c, d, pad] and mask[1].tolist() == [1, 1, 1, 0]


def test_response_log_probs_match_log_softmax(env) -> None:  # type: ignore[no-untyped-def]
    class Fixed(torch.nn.Module):
        def __init__(self, logits: torch.Tensor) -> None:
            super().__init__()
            self.logits = logits

        def forward(self, input_ids: torch.Tensor):  # type: ignore[no-untyped-def]
            return type("Out", (), {"logits": self.logits})()

    logits = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([[0, 4, 2], [1, 1, 3]])
    got = env.grpo.response_log_probs(Fixed(logits), torch.zeros(2, 3, dtype=torch.long), labels)
    want = torch.log_softmax(logits, -1).gather(-1, labels[..., None]).squeeze(-1)
    assert torch.allclose(got, want, atol=1e-5)


# ------------------------------------------------------------------------- config and sampling


def test_overrides_cast_to_the_default_type(env) -> None:  # type: ignore[no-untyped-def]
    g = env.grpo
    saved = (g.LEARNING_RATE, g.GROUP_SIZE, g.NORMALIZE_BY_STD, g.LOSS_TYPE)
    try:
        g.apply_overrides(g.SETTINGS, ["--GROUP_SIZE=4"], {"GRPO_LEARNING_RATE": "3e-5", "GRPO_NORMALIZE_BY_STD": "0"})
        assert (g.LEARNING_RATE, g.GROUP_SIZE, g.NORMALIZE_BY_STD) == (3e-5, 4, False)
        with pytest.raises(SystemExit, match="unknown argument"):
            g.apply_overrides(g.SETTINGS, ["--NOT_A_SETTING=1"], {})
    finally:
        g.LEARNING_RATE, g.GROUP_SIZE, g.NORMALIZE_BY_STD, g.LOSS_TYPE = saved


def test_stop_string_is_kept_and_the_rest_cut(env) -> None:  # type: ignore[no-untyped-def]
    cut = env.rollout.truncate_at_stop
    assert cut("x </think> <answer>5</answer>\nmore</answer>", "</answer>") == "x </think> <answer>5</answer>"
    assert cut("no stop here", "</answer>") == "no stop here"


def test_transformers_engine_returns_n_samples_per_prompt(env) -> None:  # type: ignore[no-untyped-def]
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    engine = env.rollout.HFEngine(LlamaForCausalLM(config), tok, batch_size=4)
    out = engine.generate(["a b", "c"], n=3, temperature=1.0, top_p=1.0, max_tokens=5, stop=None)
    assert len(out) == 6  # the n samples of each prompt, adjacent
    assert all(len(o.split()) <= 5 for o in out)  # at most max_tokens new tokens


def test_transformers_engine_samples_from_its_own_copy_until_sync(env) -> None:  # type: ignore[no-untyped-def]
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, pad_token_id=tok.pad_token_id)
    policy = LlamaForCausalLM(config)
    engine = env.rollout.HFEngine(policy, tok, batch_size=4)
    with torch.no_grad():
        policy.lm_head.weight.add_(1.0)  # an optimiser step
    assert not torch.equal(engine.model.lm_head.weight, policy.lm_head.weight)  # evaluation sees the old weights
    engine.sync(policy)
    assert torch.equal(engine.model.lm_head.weight, policy.lm_head.weight)


def test_manifest_presets_and_metric() -> None:
    base = load_manifest(ENV_DIR)
    assert base.metric.name == "eval_accuracy" and base.metric.goal is Goal.MAXIMIZE
    assert base.metric.reduce is Reduce.MAX and base.files.hidden == ("evaluate.py",)
    assert {"grader.py", "harness.py"} <= set(base.files.readonly)  # the training reward uses the grader
    assert base.score is not None and base.score.command == "python evaluate.py"
    assert set(base.score.private_data) == {"grpo/math/test.jsonl", "grpo/arith/test.jsonl"}
    assert base.budget is not None and base.budget.seconds == 7200
    assert base.metric.partial_on_timeout and base.search.ideas_per_epoch == 50
    assert base.guidance is not None and "curriculum" in base.guidance.direction
    assert {"b200", "a100", "h100-small", "cpu-smoke"} <= set(base.presets)
    a100 = load_manifest(ENV_DIR, "a100")
    assert a100.run.env["GRPO_ROLLOUT_PROMPTS"] == "64" and a100.run.env["HF_HUB_OFFLINE"] == "1"
    smoke = load_manifest(ENV_DIR, "cpu-smoke")
    assert smoke.run.gpus == 0 and smoke.run.env["GRPO_MODEL"] == "smollm2-135m-instruct"
