# Everything a fresh clone needs: `make demo`, `make test`, `make lint`, `make bench`.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tasker demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict tasker

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/batch.py
	$(BIN)/python bench/burst.py
	$(BIN)/python bench/metrics_cost.py
	@if $(BIN)/python -c "import redis; redis.Redis(socket_timeout=1).ping()" 2>/dev/null; then \
		$(BIN)/python bench/distributed.py; \
	else echo "bench/distributed.py skipped: no Redis on 127.0.0.1:6379"; fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info
