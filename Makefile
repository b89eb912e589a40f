# Every target sets itself up: a fresh machine needs only python3 (3.11+) and make.
# `make run` installs the server alone (with the PostgreSQL driver); the other targets add the
# development tools to the same .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test test-containers lint bench bench-scale bench-retention bench-postgres bench-syslog bench-elastic bench-otlp bench-loki bench-shippers fuzz mutation clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.runtime: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[postgres]'
	touch $@

$(VENV)/.installed: $(VENV)/.runtime
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: $(VENV)/.runtime  ## start the server on the embedded SQLite store in ./data
	$(BIN)/python -m aggregator $(ARGS)

test: $(VENV)/.installed  ## install everything and run the whole test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-containers: $(VENV)/.installed  ## the compose story on a real engine (needs root or a running one)
	PYTHON=$(BIN)/python bash containers/test.sh $(PYTEST_ARGS)

lint: $(VENV)/.installed  ## ruff, mypy, hadolint on the Dockerfile, docker-compose on compose.yaml
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile
	docker-compose -f compose.yaml --profile tui --profile postgres config -q

bench: $(VENV)/.installed  ## the benchmark table (docs/benchmarks.md)
	$(BIN)/python -m simulator.bench $(ARGS)

bench-scale: $(VENV)/.installed  ## ingest, reads and start-up on 0, 1M and 10M stored events
	$(BIN)/python -m simulator.benchscale $(ARGS)

bench-retention: $(VENV)/.installed  ## publish p99 with retention deleting as fast as events come
	$(BIN)/python -m bench.retention $(ARGS)

bench-postgres: $(VENV)/.installed  ## events/s with 1, 2, 3 processes on one PostgreSQL database
	$(BIN)/python -m bench.postgres $(ARGS)

bench-syslog: $(VENV)/.installed  ## events/s through the syslog TCP door beside /publish
	$(BIN)/python -m bench.syslog $(ARGS)

bench-elastic: $(VENV)/.installed  ## events/s through the Elasticsearch bulk door beside /publish
	$(BIN)/python -m bench.elastic $(ARGS)

bench-otlp: $(VENV)/.installed  ## records/s through the OTLP/HTTP door (protobuf, JSON) beside /publish
	$(BIN)/python -m bench.shippers --doors otlp $(ARGS)

bench-loki: $(VENV)/.installed  ## records/s through the Loki push door (protobuf+snappy, JSON) beside /publish
	$(BIN)/python -m bench.shippers --doors loki $(ARGS)

bench-shippers: $(VENV)/.installed  ## both doors and /publish in one run
	$(BIN)/python -m bench.shippers --doors all $(ARGS)

# Both fuzzers, each for SECONDS_EACH seconds (their short runs are part of make test).
SECONDS_EACH ?= 600
SEED ?= 1
fuzz: $(VENV)/.installed  ## coverage-guided decoder fuzzing, then the campaign against a server
	$(BIN)/python -m fuzz.decoders --seconds $(SECONDS_EACH) --seed $(SEED)
	$(BIN)/python -m fuzz.server --seconds $(SECONDS_EACH) --seed $(SEED)

mutation: $(VENV)/.installed  ## deliberate bugs, then mutmut's score (docs/development.md)
	$(BIN)/python -m mutation.deliberate
	$(BIN)/mutmut run --max-children 2 > /dev/null
	$(BIN)/python -m mutation.score

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache mutants
