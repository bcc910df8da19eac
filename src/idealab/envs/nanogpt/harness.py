"""The frozen part of the nanogpt environment's training: run settings, the seed, the training budget, the
training data and saving the trained model for the scorer. Read-only for ideas.

Settings come from environment variables that the manifest (and its presets) set, and the budget from the
executor (IDEALAB_BUDGET_S seconds of IDEALAB_BUDGET_CLOCK time, "wall": wall-clock since the job
started, or "cpu": CPU time of the job, start-up included); they are read once, when
train_gpt.py imports this module. The validation and the metric are not here: idealab runs the hidden
scorer (score.py) in a fresh process after training, on the model saved by save_artefact.
"""

import os
import signal
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

ARTEFACT = "model.pt"  # what the scorer loads from the job's output directory


def _data_root():
    base = os.environ.get("IDEALAB_DATA_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "idealab"
    )
    return os.path.join(base, "nanogpt")


@dataclass(frozen=True)
class Settings:
    time_limit_s: float  # training stops once this much time (of `clock`) has passed since the job started
    clock: str  # "wall" or "cpu", as the manifest's [budget] says
    train_glob: str
    wandb: bool = False
    wandb_project: str = "idealab-nanogpt"
    wandb_run: str | None = None

    @staticmethod
    def from_env(env=os.environ):
        dataset = env.get("NANOGPT_DATASET", "fineweb10B")
        root = os.path.join(_data_root(), dataset)
        return Settings(
            # the executor's budget; 1500 s (the paper's) when the script runs outside idealab
            time_limit_s=float(env.get("IDEALAB_BUDGET_S") or "1500"),
            clock=env.get("IDEALAB_BUDGET_CLOCK") or "wall",
            train_glob=env.get("NANOGPT_TRAIN_GLOB") or os.path.join(root, "*_train_*.bin"),
            wandb=env.get("NANOGPT_WANDB", "0").lower() in ("1", "true", "yes", "on"),
            wandb_project=env.get("NANOGPT_WANDB_PROJECT", "idealab-nanogpt"),
            wandb_run=env.get("NANOGPT_WANDB_RUN") or None,
        )


SETTINGS = Settings.from_env()
# The job's seed: idealab sets IDEALAB_SEED, a different one for each run (repeats of the baseline,
# confirmation runs of an idea). It lives here, in the fixed part, so an idea cannot pin a lucky seed.
SEED = int(os.environ.get("IDEALAB_SEED", "1337"))


def process_age_s():
    """Seconds since this process started (Linux: from /proc; elsewhere: since this module was imported),
    so that the budget counts start-up as the executor does."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED


_IMPORTED = time.perf_counter()
_STOP_REQUESTED = []  # the executor's SIGUSR1 arrived (a list: set from the handler, read by TrainClock)


def _on_sigusr1(signum, frame):
    _STOP_REQUESTED.append(signum)


# Installed when train_gpt.py imports this module (its first protected line), not when the clock starts:
# a signal during the start-up would otherwise end the process before the model could be saved.
signal.signal(signal.SIGUSR1, _on_sigusr1)


class TrainClock:
    """The training budget: wall-clock time since the process started (clock "wall") or this process's CPU
    time (clock "cpu"), and the executor's SIGUSR1, which means the budget is spent (the executor kills the
    job if it is still running grace_s later). Training stops at the first step boundary after either; the
    stop decision is all-reduced so that every rank leaves the loop at the same step."""

    def __init__(self, device, limit_s, clock="wall"):
        if clock not in ("wall", "cpu"):
            raise ValueError(f"IDEALAB_BUDGET_CLOCK={clock!r}: choose wall or cpu")
        self.device, self.limit_s, self.clock = torch.device(device), limit_s, clock
        self.t0 = None

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @property
    def stop_requested(self):
        return bool(_STOP_REQUESTED)

    def start(self):
        self._sync()
        self.t0 = time.perf_counter() - process_age_s()

    def elapsed_s(self):
        """Wall-clock seconds since the process started."""
        self._sync()
        return time.perf_counter() - self.t0

    def spent_s(self):
        """What the budget counts: wall-clock seconds, or CPU seconds of this process (all its threads)."""
        return self.elapsed_s() if self.clock == "wall" else time.process_time()

    def should_stop(self):
        spent = self.stop_requested or self.spent_s() >= self.limit_s
        over = torch.tensor([1.0 if spent else 0.0], device=self.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(over, op=dist.ReduceOp.MAX)
        return bool(over.item() > 0)


# ------------------------------------------------------------------------------------------ the artefact


def save_artefact(model, step, train_time_s, out_dir=None):
    """Save the trained weights for the scorer (score.py, run by idealab in a fresh process after
    training): model.pt in IDEALAB_OUTPUT_DIR, written to a temporary name first, so that a stop during
    the write never leaves a half file under the final name. The scorer rebuilds the model with
    train_gpt.build_model() and loads this state dict."""
    out_dir = out_dir or os.environ.get("IDEALAB_OUTPUT_DIR") or "."
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, ARTEFACT)
    state = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save({"state_dict": state, "step": int(step), "train_time_s": float(train_time_s)}, tmp)
    os.replace(tmp, path)
    print(f"saved the trained model ({sum(v.numel() for v in state.values()):,} values) to {path}", flush=True)
    return path


class RunLogger:
    """Per-step series to stdout (every `every` steps) and, when enabled, to Weights & Biases."""

    def __init__(self, settings, config, enabled=True, every=10):
        self.enabled, self.every, self.run = enabled, every, None
        if enabled and settings.wandb:
            import wandb  # optional dependency, only with NANOGPT_WANDB=1

            self.run = wandb.init(project=settings.wandb_project, name=settings.wandb_run, config=config)

    def step(self, step, train_loss, grad_norm, lr, tokens_per_s, step_time_s):
        if not self.enabled:
            return
        if self.run is not None:
            self.run.log(
                {"train_loss": train_loss, "grad_norm": grad_norm, "lr": lr, "tokens_per_s": tokens_per_s,
                 "step_time_ms": step_time_s * 1000},
                step=step,
            )
        if step % self.every == 0 or step < 10:
            print(
                f"step:{step} train_loss:{train_loss:.4f} grad_norm:{grad_norm:.3f} lr:{lr:.3e} "
                f"tok/s:{tokens_per_s:,.0f} step_time:{step_time_s * 1000:.1f}ms",
                flush=True,
            )

    def final(self, step, train_time_s):
        if self.enabled and self.run is not None:
            self.run.log({"train_time_s": train_time_s}, step=step)
            self.run.finish()
