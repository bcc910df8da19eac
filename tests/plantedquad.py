"""quad with planted outcomes: the jobs of chosen seeds fail or hang past the time limit, for search-level
tests of a backend's statuses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from idealab.search.evidence import trial_seed
from idealab.search.journal import BASELINE_EPOCH

QUAD = Path(__file__).parent / "envs" / "quad"
BASELINE_OUTCOMES = ("failed", "timeout", "ok")  # of the three baseline runs, in order


def planted_env(tmp_path: Path, seed: int) -> Path:
    """quad, whose three baseline runs of a search with `seed` end failed, at the 5 s time limit (leaving a
    tree of children behind it: two sleeps under a shell) and ok; every other job ends ok."""
    env = tmp_path / "planted"
    shutil.copytree(QUAD, env)
    plan = {trial_seed(seed, BASELINE_EPOCH, k, 0): outcome for k, outcome in enumerate(("fail", "hang", "ok"))}
    (env / "plan.json").write_text(json.dumps({str(k): v for k, v in plan.items()}))
    train = (env / "train.py").read_text()
    (env / "train.py").write_text(
        train.replace(
            "time.sleep(",
            "import json, subprocess, sys\n"
            "plan = json.load(open('plan.json')).get(os.environ['IDEALAB_SEED'], 'ok')\n"
            "if plan == 'fail':\n    sys.exit(3)\n"
            "if plan == 'hang':\n    subprocess.Popen(['sh', '-c', 'sleep 600 & sleep 600'])\n    time.sleep(600)\n"
            "time.sleep(",
            1,
        )
    )
    manifest = (env / "idealab.toml").read_text().replace("timeout_s = 30", "timeout_s = 5")
    manifest = manifest.replace('readonly = ["score.py"]', 'readonly = ["score.py", "plan.json"]')
    (env / "idealab.toml").write_text(manifest)
    return env
