"""GRPO fine-tuning of a small causal LM on math problems: rollouts, group advantages, clipped loss."""

import random

import torch
import torch.nn.functional as F

# -----------------------------------------------------------------------------
# hyperparameters
learning_rate = 1e-5
grpo_steps = 20
group_size = 8
rollout_batch_size = 128
gradient_accumulation_steps = 16
micro_batch_size = 4
cliprange = 0.28
loss_type = "grpo_clip"
eval_every = 2
max_new_tokens = 1024
temperature = 1.0
seed = 42


def compute_group_advantages(rewards, group_size, eps=1e-6):
    # rewards: (n_prompts * group_size,) -> advantages of the same shape
    grouped = rewards.view(-1, group_size)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, keepdim=True)
    advantages = (grouped - mean) / (std + eps)
    return advantages.view(-1)


def masked_mean(values, mask, dim=None):
    masked = values * mask
    if dim is None:
        return masked.sum() / mask.sum()
    return masked.sum(dim=dim) / mask.sum(dim=dim)


def response_log_probs(model, input_ids, attention_mask):
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    logits = logits[:, :-1, :]
    targets = input_ids[:, 1:]
    log_probs = F.log_softmax(logits.float(), dim=-1)
    return torch.gather(log_probs, dim=-1, index=targets.unsqueeze(-1)).squeeze(-1)


def policy_loss(log_probs, old_log_probs, advantages, response_mask):
    if loss_type == "no_baseline":
        per_token = -advantages.unsqueeze(-1) * log_probs
    elif loss_type == "reinforce_with_baseline":
        per_token = -advantages.unsqueeze(-1) * log_probs
    elif loss_type == "grpo_clip":
        ratio = torch.exp(log_probs - old_log_probs)
        clipped = torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
        per_token = -torch.min(ratio * advantages.unsqueeze(-1), clipped * advantages.unsqueeze(-1))
    else:
        raise ValueError(f"unknown loss_type {loss_type}")
    return masked_mean(per_token, response_mask)


def sample_prompts(dataset, n):
    return random.sample(dataset, n)


def train_step(model, optimizer, batch):
    model.train()
    total = 0.0
    for start in range(0, len(batch["input_ids"]), micro_batch_size):
        end = start + micro_batch_size
        log_probs = response_log_probs(model, batch["input_ids"][start:end], batch["attention_mask"][start:end])
        loss = policy_loss(
            log_probs,
            batch["old_log_probs"][start:end],
            batch["advantages"][start:end],
            batch["response_mask"][start:end],
        )
        loss = loss / gradient_accumulation_steps
        loss.backward()
        total += loss.item()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total


def evaluate(model, eval_fn, problems):
    model.eval()
    with torch.no_grad():
        correct = sum(eval_fn(model, problem) for problem in problems)
    model.train()
    return correct / len(problems)


def main(model, tokenizer, train_set, test_set, rollout_fn, reward_fn, eval_fn):
    random.seed(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0, betas=(0.9, 0.95))
    best_accuracy = 0.0
    for step in range(grpo_steps):
        prompts = sample_prompts(train_set, rollout_batch_size // group_size)
        batch = rollout_fn(model, tokenizer, prompts, group_size, max_new_tokens, temperature)
        rewards = torch.tensor([reward_fn(r, p) for r, p in zip(batch["responses"], batch["answers"])])
        batch["advantages"] = compute_group_advantages(rewards, group_size)
        with torch.no_grad():
            batch["old_log_probs"] = response_log_probs(model, batch["input_ids"], batch["attention_mask"])
        loss = train_step(model, optimizer, batch)
        print(f"step {step}: loss {loss:.4f} reward {rewards.mean().item():.3f}")

        if step % eval_every == 0 or step == grpo_steps - 1:
            accuracy = evaluate(model, eval_fn, test_set)
            best_accuracy = max(best_accuracy, accuracy)
            print(f"step {step}: eval accuracy {accuracy:.3f}")

    print(f'@metric {{"name": "accuracy", "value": {best_accuracy:.4f}}}')
    return best_accuracy
