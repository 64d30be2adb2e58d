# divmon task runner. `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install tools kafka native pure lint test test-fast demo bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(VENV)/.installed streams/core/_compiled.json ## Create .venv, install divmon and its dev extras, compile its engine

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip 'setuptools>=77' wheel
	$(BIN)/pip install -q -e '.[dev,plot,demo,rocksdb]'
	@touch $@

tools: ## Install promtool/prometheus (Debian package) when missing
	@scripts/install-tools.sh

kafka: ## Fetch the Apache Kafka broker jars with Maven (tests start a real KRaft broker)
	@scripts/fetch-kafka.sh

# the pure-Python twins of the native build (the engine, the Avro reader and writer, the event ids and
# constructors) are tested too (DIVMON_PURE=1):
# they run wherever no compiler is
PURE_TESTS := tests/unit/test_engine.py tests/unit/test_events_fast.py tests/unit/test_cevents.py \
              tests/unit/test_checksum.py tests/unit/test_serde.py \
              tests/unit/test_codec_direct.py tests/unit/test_tapes_avro_direct.py tests/unit/test_codec_encoder.py \
              tests/unit/test_replay_cli.py tests/test_scenarios.py tests/test_properties.py

# the engine's hot modules compiled with mypyc, the C Avro reader and writer, the C event ids and
# constructors (streams/_native.py): part of
# install, redone when they change (which modules: COMPILED and C_MODULES in streams/_native.py; any
# change in streams/core rebuilds); without
# a C compiler and Python's headers it says so and the pure-Python modules run
streams/core/_compiled.json: $(VENV)/.installed $(wildcard streams/core/*.py) streams/codec/_cavro.c streams/core/_cevents.c streams/_native.py
	$(BIN)/python scripts/native.py build --optional

native: install ## Compile the engine's hot modules with mypyc (same source, ~1.6x faster; part of install)

pure: ## Remove the compiled engine until the next make install (or run with DIVMON_PURE=1)
	$(BIN)/python scripts/native.py clean

lint: install ## ruff and mypy (strict on streams/core)
	$(BIN)/ruff check streams tests bench
	$(BIN)/mypy streams

test: install tools kafka ## Run the whole suite: unit, scenarios, properties, real Kafka, chdb, promtool
	$(BIN)/pytest $(PYTEST_ARGS)
	DIVMON_PURE=1 $(BIN)/pytest $(PURE_TESTS) $(PYTEST_ARGS)

test-fast: install ## Unit, scenario and property tests only (no broker)
	$(BIN)/pytest -m "not kafka and not slow" $(PYTEST_ARGS)
	DIVMON_PURE=1 $(BIN)/pytest -m "not kafka and not slow" $(PURE_TESTS) $(PYTEST_ARGS)

demo: install ## The whole product in one command: broker, worker, ClickHouse, report, gate
	$(BIN)/divmon demo

bench: install kafka ## Benchmarks: replay vs bare parse, codec, worker, tapes diff
	$(BIN)/python bench/run_all.py

clean: ## Remove caches and local data (keeps .venv and the Kafka jars)
	rm -rf var .pytest_cache .mypy_cache .ruff_cache .hypothesis
