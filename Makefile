# The two commands a newcomer needs: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATASETS ?= ../shared/datasets
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: install demo test test-real test-all fuzz report-shot bench bench-ingest bench-quality bench-train bench-latency bench-scale bench-scale-full bench-batch-floor bench-serve lint format clean

install: $(STAMP)

# torch is pinned to the CPU build first, so that the permissive range in pyproject.toml is already
# satisfied and pip does not pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[dev,serve]'
	$(BIN)/python -m compileall -q recctl  # an editable install writes no bytecode; cold starts need it
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/recctl demo

# Real-data tests run too when the datasets folder exists; slow runs are kept out. Two workers (the CI
# machine has 2 cores; many tests wait on subprocesses), each test file on one worker so its module
# fixtures are built once: 7.4 min on an idle 2-core machine against 11.5 min in one process.
TEST_WORKERS ?= 2
PYTEST_PAR := -n $(TEST_WORKERS) --dist loadfile
test: $(STAMP)
	@if [ -d "$(DATASETS)" ]; then \
		RECCTL_DATASETS="$(DATASETS)" $(BIN)/pytest -m "not slow" $(PYTEST_PAR); \
	else \
		echo "note: $(DATASETS) not found, real-data tests not selected (see make test-real)"; \
		$(BIN)/pytest -m "not slow and not realdata" $(PYTEST_PAR); \
	fi

# property-based fuzzing of the readers and the mapping/config loaders, long profile (about 10 minutes;
# make test runs the same properties with a small, seeded budget). RECCTL_FUZZ_SCALE=N scales it.
fuzz: $(STAMP)
	RECCTL_FUZZ=long $(BIN)/pytest tests/test_fuzz_ingest.py -q -p no:cacheprovider --hypothesis-show-statistics

# the evaluation report of the sample shop (all configured models), opened in the OS Chromium (headless,
# no network): build/report-shot/report.html and a 1280x2400 screenshot report.png (some minutes)
SHOT := build/report-shot
report-shot: $(STAMP)
	rm -rf $(SHOT) && mkdir -p $(SHOT)
	$(BIN)/recctl -q init $(SHOT)/shop
	cd $(SHOT)/shop && for t in events:events.csv.gz items:items.ndjson users:users.csv; do \
		$(abspath $(BIN))/recctl -q ingest $${t%%:*} $(CURDIR)/sample_data/$${t#*:} --mapping sample-shop-$${t%%:*} || exit 1; \
	done
	cd $(SHOT)/shop && $(abspath $(BIN))/recctl evaluate --dataset sample-shop --report ../report.html > ../evaluate.txt
	$(BIN)/python -m tests.browser $(SHOT)/report.html $(SHOT)/report.png

test-real: $(STAMP)
	RECCTL_DATASETS="$(DATASETS)" $(BIN)/pytest -m realdata

test-all: $(STAMP)
	RECCTL_DATASETS="$(DATASETS)" $(BIN)/pytest

# the speed and memory benchmarks, one after the other (run them on an idle machine); quality and scale are separate
bench: bench-ingest bench-train bench-latency

bench-ingest: $(STAMP)
	$(BIN)/python benchmarks/ingest.py

# offline quality on the public datasets (needs ../shared/datasets): benchmarks/results/quality.json
bench-quality: $(STAMP)
	RECCTL_DATASETS="$(DATASETS)" $(BIN)/python benchmarks/quality.py

# recctl train (generators + ranker) on Complete Journey: wall time and peak memory, results/train.json
bench-train: $(STAMP)
	RECCTL_DATASETS="$(DATASETS)" $(BIN)/python benchmarks/train.py

# serving latency on Complete Journey (cold CLI, lookups, rerank, sessions, batch): results/latency.json
bench-latency: $(STAMP)
	RECCTL_DATASETS="$(DATASETS)" $(BIN)/python benchmarks/latency.py

# growth curves (issue 15): ingest, features, train, evaluate and recommend --all on synthetic shops of 1M and
# 10M events (`recctl sample --scale`), wall / CPU / peak RSS per stage and size and the growth exponent per
# stage: results/scale.json. bench-scale-full adds 100M events (slow: hours, ~10 GB of disk; not in make test)
bench-scale: $(STAMP)
	$(BIN)/python benchmarks/scale.py

bench-scale-full: $(STAMP)
	$(BIN)/python benchmarks/scale.py --sizes 1M,10M,100M

# recctl serve under load on Complete Journey (wrk, loopback): p50/p99 per route, peak memory, a promotion
# under load with zero failed requests: results/serve.json (needs Debian's wrk)
bench-serve: $(STAMP)
	RECCTL_DATASETS="$(DATASETS)" $(BIN)/python benchmarks/serve.py

# the least recommend --all can cost on Complete Journey: EASE's scoring product alone, as fast as BLAS does it
bench-batch-floor: $(STAMP)
	RECCTL_DATASETS="$(DATASETS)" $(BIN)/python benchmarks/batch_floor.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf demo/ .pytest_cache .mypy_cache .ruff_cache
