PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-all bench lint clean

# Re-install only when the dependency list changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Train cnn4 on synthetic faces (CPU, a few minutes) and analyse it; everything lands in outputs/demo/.
demo: $(STAMP)
	rm -rf outputs/demo
	$(PY) train.py experiment=demo
	$(PY) analyze.py run=outputs/demo

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ''

bench: $(STAMP)
	for b in bench/bench_*.py bench/time_to_accuracy.py; do echo "== $$b"; $(PY) $$b || exit 1; done

lint: $(STAMP)
	$(PY) -m ruff check fer tests bench train.py analyze.py
	$(PY) -m ruff format --check fer tests bench train.py analyze.py

clean:
	rm -rf $(VENV) outputs multirun/20*
