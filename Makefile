# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SHARED_DATA ?= ../shared/data
SHARED_FLAG := $(if $(wildcard $(SHARED_DATA)),--shared-data $(SHARED_DATA),)

LLAMACPP_STAMP := $(VENV)/.llamacpp-installed
RAY_STAMP := $(VENV)/.ray-installed

.PHONY: setup data browser llamacpp ray sandbox slurm demo test test-fast lint bench screenshots clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.lock
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Offline data of every environment (Shakespeare text, byte shards, SmolLM2 weights, arithmetic tasks; MATH
# and the R1-Zero prompt from ../shared/data when it is there) into $$IDEALAB_DATA_DIR. What cannot be had
# here is reported per environment, with how to get it, and does not fail the target.
data: $(STAMP)
	$(BIN)/idealab data fetch $(SHARED_FLAG)

# The real llama.cpp server test (tests/test_llamacpp_real.py) needs llama-cpp-python[server], pinned in
# requirements-llamacpp.txt and built from its sdist (it compiles llama.cpp: 48 min on a busy 2-core
# machine the first time; pip caches the built wheel, so later installs take seconds). A failed build
# does not stop `make test`: that test skips with the reason, and the log is .venv/llamacpp-build.log.
llamacpp: $(LLAMACPP_STAMP)

$(LLAMACPP_STAMP): requirements-llamacpp.txt | $(STAMP)
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/python -m pip install --disable-pip-version-check --no-binary llama-cpp-python \
		-r requirements-llamacpp.txt > $(VENV)/llamacpp-build.log 2>&1 && touch $@ \
		|| echo "llama-cpp-python could not be built (see $(VENV)/llamacpp-build.log): the real-server test will skip"

# The Ray backend's extra (requirements-ray.txt: ray[default] and what it pulls in, pinned): tests/test_ray_backend.py
# starts a real local Ray cluster with it. Where it cannot be installed, those tests skip with the reason (in CI,
# where IDEALAB_REQUIRE_CLUSTERS=1, they fail instead).
ray: $(RAY_STAMP)

$(RAY_STAMP): requirements-ray.txt | $(STAMP)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements-ray.txt > $(VENV)/ray-install.log 2>&1 \
		&& touch $@ || echo "ray could not be installed (see $(VENV)/ray-install.log): the Ray backend's tests will skip"

# The demo prepares only what it runs.
demo: $(STAMP) sandbox
	$(BIN)/idealab env prepare charlm --preset demo
	rm -rf runs/demo
	# 3 measured baseline runs, 8 ideas, the top 2 confirmed with 3 seeds each (about 15-20 short jobs, each
	# trained for 15 CPU s and scored in a separate process)
	$(BIN)/idealab run --env charlm --preset demo --epochs 2 --ideas-per-epoch 4 --slots 2 --seed 0 \
		--baseline-runs 3 --confirm-top 2 --confirm-seeds 3 --workdir runs/demo

# Debian's chromium for the browser tests (skipped, with the reason, where it cannot be installed).
browser:
	bash tests/browser/setup.sh

# Debian's bubblewrap: every job and preflight runs in it (docs/sandbox.md); without it, a warning.
sandbox:
	bash tests/sandbox/setup.sh

# Debian's slurm-wlm and munge: tests/test_slurm.py starts a real single-node cluster with them
# (../shared/tools/slurm-single-node.sh; skipped, with the reason, where that is absent or cannot run).
slurm:
	bash tests/slurm/setup.sh

test: data browser llamacpp ray sandbox slurm
	$(BIN)/python -m pytest -q

test-fast: $(STAMP) sandbox
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/utilisation.py
	$(BIN)/python benchmarks/apply_rate.py
	$(BIN)/python benchmarks/static_checks.py
	$(BIN)/python benchmarks/sandbox_overhead.py

# The report and dashboard screenshots in docs/, taken by the browser tests.
screenshots: setup browser
	IDEALAB_SCREENSHOTS=docs $(BIN)/python -m pytest -q tests/views/test_browser.py

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
