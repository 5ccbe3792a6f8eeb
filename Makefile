# Two commands on a fresh machine: `make pretrain` and `make test`. Both build .venv first.
PY_SYS ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PIP    := $(PY) -m pip --disable-pip-version-check -q

.PHONY: install pretrain test bench clean

$(STAMP): pyproject.toml
	$(PY_SYS) -m venv $(VENV)
	$(PIP) install --upgrade pip
	# CPU build first: a plain torch requirement would otherwise pull a CUDA build of several GB.
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs *.egg-info
