# The verbs a newcomer needs. Every target installs what is missing first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
N      ?= 200

.PHONY: run demo test test-fast lint fmt bench compare profile clean install

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)           ## the whole pipeline on the embedded broker, until Ctrl-C
	$(BIN)/claimflow run

demo: $(STAMP)          ## N encounters through the pipeline, then a summary (N=200)
	$(BIN)/claimflow demo --encounters $(N)

test: $(STAMP)          ## the whole suite, real-broker tests included
	$(BIN)/python -m pytest

test-fast: $(STAMP)     ## unit and contract tests only (no broker)
	$(BIN)/python -m pytest tests/unit tests/contract -m "not long"

bench: $(STAMP)         ## benchmarks, one JSON line each, with a same-run baseline
	$(BIN)/python -m bench $(B)

compare: $(STAMP)       ## the pipeline benchmark here and at commit REF, in turn (REF=<commit>)
	@test -n "$(REF)" || { echo "make compare REF=<commit>: the commit to compare against"; exit 2; }
	$(BIN)/python -m bench.compare $(REF)

profile: $(STAMP)       ## the pipeline benchmark under py-spy: where each process spends its CPU
	@mkdir -p .claimflow
	$(BIN)/py-spy record --subprocesses --nonblocking --rate 50 --format speedscope \
		--output .claimflow/profile.speedscope.json -- $(BIN)/python -m bench pipeline
	@echo "open .claimflow/profile.speedscope.json in https://www.speedscope.app"

lint: $(STAMP)
	$(BIN)/ruff check pipeline services sim tests bench
	$(BIN)/ruff format --check pipeline services sim tests bench
	$(BIN)/mypy pipeline services
	$(BIN)/lint-imports --no-cache
	@if command -v promtool >/dev/null; then promtool check rules deploy/prometheus/rules.yml; \
	else echo "promtool not found: rules not checked (apt-get install prometheus)"; fi

fmt: $(STAMP)
	$(BIN)/ruff format pipeline services sim tests bench
	$(BIN)/ruff check --fix pipeline services sim tests bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .claimflow
