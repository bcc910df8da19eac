"""The frozen part of the GRPO environment's training: the evaluation schedule's policy snapshots and the
end of the training budget. Read-only for ideas.

The metric is the best accuracy of the paper's evaluations: at the start of GRPO steps 0, 2, ..., 18
(every GRPO_EVAL_EVERY steps), with the weights the rollout engine held then, which it had taken from the
policy at the start of the previous step. So the evaluation of step s sees the policy as it was at the
start of step max(s - 1, 0). Training does not evaluate: at each step start the trainer calls
`snapshots.at_step_start(step, model)`, which saves those weights into IDEALAB_OUTPUT_DIR, and idealab's
hidden scorer (evaluate.py, in a fresh process after training) samples and grades every saved snapshot.

A snapshot taken for the evaluation of step s counts only once the run reaches the start of step s
(as in the paper, where a run stopped earlier never logged that evaluation). The executor's SIGUSR1 (the
training budget is spent) ends the run at once, after a snapshot being written, if any, is complete.
"""

import json
import os
import shutil
import signal
import sys

EVAL_EVERY = int(os.environ.get("GRPO_EVAL_EVERY", "2"))  # a preset may change it; an idea may not


def snapshot_name(step):
    return f"policy-step{step:04d}"


class PolicySnapshots:
    def __init__(self, grpo_steps, out_dir=None):
        self.steps = grpo_steps
        self.out = out_dir or os.environ.get("IDEALAB_OUTPUT_DIR") or "grpo-output"
        os.makedirs(self.out, exist_ok=True)
        self.saving = self.stop_requested = False
        signal.signal(signal.SIGUSR1, self._on_signal)

    def _on_signal(self, signum, frame):
        if self.saving:  # finish the snapshot first; at_step_start leaves then
            self.stop_requested = True
            return
        self._leave()

    def _leave(self):
        print("the training budget is spent: stopping; the snapshots saved so far are scored", flush=True)
        sys.stdout.flush()
        os._exit(0)

    def evaluated_at(self, step):
        """The evaluation steps whose weights are the policy's at the start of `step`."""
        return [s for s in (step, step + 1)
                if s < self.steps and s % EVAL_EVERY == 0 and max(s - 1, 0) == step]

    def at_step_start(self, step, model):
        """Promote the snapshot taken for this step's evaluation, then save the current weights for the
        evaluations that will see them."""
        pending = os.path.join(self.out, "pending-" + snapshot_name(step))
        if os.path.isdir(pending):
            os.replace(pending, os.path.join(self.out, snapshot_name(step)))
        for s in self.evaluated_at(step):
            final = os.path.join(self.out, snapshot_name(s))
            target = final if s == step else os.path.join(self.out, "pending-" + snapshot_name(s))
            self._save(model, target, s)
        if self.stop_requested:
            self._leave()

    def _save(self, model, target, eval_step):
        self.saving = True
        try:
            tmp = target + ".tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            model.save_pretrained(tmp, safe_serialization=True)
            with open(os.path.join(tmp, "snapshot.json"), "w") as f:
                json.dump({"eval_step": eval_step}, f)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
            print(f"saved the policy for the evaluation of step {eval_step} to {target}", flush=True)
        finally:
            self.saving = False
