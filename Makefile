# Two commands on a fresh machine: `make pretrain` and `make test`. Both build .venv first.
PY_SYS ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PIP    := $(PY) -m pip --disable-pip-version-check -q

.PHONY: install pretrain test lint clean cluster-token cluster-local submit cluster-stop

$(STAMP): pyproject.toml
	$(PY_SYS) -m venv $(VENV)
	$(PIP) install --upgrade pip
	# CPU build first: a plain torch requirement would otherwise pull a CUDA build of several GB.
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# TerraTorch needs a torchvision built for its torch, and PyPI's Linux torchvision wheels are CUDA
# builds that do not load beside the CPU torch above (nor does torchmetrics then). Its tests run in
# an environment of their own: PyPI's torch with the matching torchvision (a CUDA build runs on a
# CPU), TerraTorch, and this package without its other dependencies. About 5 min and 7 GB.
TT_VENV  := .venv-terratorch
TT_STAMP := $(TT_VENV)/.installed-stamp
TT_PIP   := $(TT_VENV)/bin/python -m pip --disable-pip-version-check -q

$(TT_STAMP): pyproject.toml
	$(PY_SYS) -m venv $(TT_VENV)
	$(TT_PIP) install "torch==2.14.1" "torchvision==0.29.1" "terratorch>=1.2.11,<1.3" "safetensors>=0.4" \
	    pytest pytest-timeout
	$(TT_PIP) install --no-deps -e .
	touch $(TT_STAMP)

# Two pytest-xdist workers, one test module at a time each, slowest modules first (tests/conftest.py):
# most of the suite's time is Ray and driver processes starting and waiting, which overlaps well.
TEST_WORKERS ?= 2
test: $(STAMP) $(TT_STAMP)
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25

# ruff (lint rules and formatting, configured in pyproject.toml) and a byte-compile of every file,
# so that a file no test imports still has to parse. LINT_ROOT lets a test lint a planted tree.
LINT_ROOT ?= .
VENV_BIN  := $(abspath $(VENV))/bin
lint:
	cd $(LINT_ROOT) && $(VENV_BIN)/ruff check --quiet . && $(VENV_BIN)/ruff format --check --quiet .
	cd $(LINT_ROOT) && $(VENV_BIN)/python -m compileall -q -x '/(\.venv[^/]*|\.git|runs)/' .

# The main job on synthetic data with an embedded local Ray: 2 CPU workers, configs/tiny.yaml.
# Artifacts: runs/tiny/{export.pt, metrics.csv, losses.png, summary.json, step_*/}.
pretrain: $(STAMP)
	rm -rf runs/tiny
	$(PY) ray_jobs/pretrain.py --config configs/tiny.yaml --workers 2 --experiment tiny

# --- a local head and `ray job submit` (Ray 2.60: token authentication) -----------------------
# The token lives in cluster/.auth_token (mode 600 from its first byte: written under umask 077;
# git-ignored, rayignored, and excluded from the cluster YAMLs' rsync of the checkout); only its own
# file mount in cluster/*.yaml copies it to the nodes. Clients need RAY_AUTH_MODE=token and the
# token (RAY_AUTH_TOKEN_PATH). TOKEN lets a test write it elsewhere.
HEAD_PORT      ?= 6390
DASHBOARD_PORT ?= 8265
TOKEN          ?= cluster/.auth_token
RAY_AUTH       := RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$(abspath $(TOKEN))
JOB_ARGS       ?= --config configs/tiny.yaml --workers 2 --experiment submitted

cluster-token:
	@test -s $(TOKEN) || (rm -f $(TOKEN) && umask 077 && \
	    $(PY_SYS) -c "import secrets; print(secrets.token_hex(32))" > $(TOKEN))
	@chmod 600 $(TOKEN)
	@echo "token: $(TOKEN)"

cluster-local: $(STAMP) cluster-token
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(RAY_AUTH) $(VENV)/bin/ray start --head --port=$(HEAD_PORT) \
	    --dashboard-port=$(DASHBOARD_PORT) --dashboard-host=127.0.0.1 --disable-usage-stats

# Artifacts land in runs/<experiment>/ of this checkout (absolute --storage: the job itself runs
# in Ray's copy of the working directory).
submit: $(STAMP)
	$(RAY_AUTH) RAY_API_SERVER_ADDRESS=http://127.0.0.1:$(DASHBOARD_PORT) $(VENV)/bin/ray job submit \
	    --working-dir . -- python ray_jobs/pretrain.py $(JOB_ARGS) \
	    --storage $(CURDIR)/runs --cache-dir $(CURDIR)/runs/data

cluster-stop:
	$(VENV)/bin/ray stop

clean:
	rm -rf $(VENV) $(TT_VENV) runs *.egg-info
