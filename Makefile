# The two commands a fresh machine needs (see README):
#   make demo   set up, run the 3x3 campaign end to end in real Airflow, print the summary
#               (make demo EXECUTOR=celery: on one Celery worker per site queue)
#   make test   set up and run the test suite (what .ci/run runs)
#   make test-fast   config, DAG and unit tests only (no services, no stack runs): the edit loop
SHELL := /bin/bash
CAMPAIGN ?= configs/campaigns/test-3x3.yaml

.PHONY: demo test test-fast lint envs airflow-start stop clean benchmark faults

envs:
	@bash scripts/setup-envs.sh

# EXECUTOR=celery: CeleryExecutor, one Celery worker per site queue (broker: the local Redis).
EXECUTOR ?= local
demo:
	@bash scripts/setup-envs.sh --no-idds
	@DRP_EXECUTOR=$(EXECUTOR) bash scripts/demo.sh $(CAMPAIGN)

# Modules side by side on two workers (each module has its own ports, databases and directories);
# TEST_WORKERS=0 runs them one after another. --no-loadscope-reorder: modules go out in the order
# tests/conftest.py sorts them (the two long e2e modules first, one per worker), not by test count.
TEST_WORKERS ?= 2
test: envs lint
	@bash scripts/system-packages.sh
	@bash scripts/test.sh $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder) --durations=15

# The fault table: run the fault drills of the e2e suite (both e2e modules side by side, ~15 min),
# then print each drill's row: where it was injected, the outcome, datasets lost, duplicates.
faults: envs
	@bash scripts/system-packages.sh
	@rm -f var/faults.jsonl
	@bash scripts/test.sh -m drill -n 2 --dist loadfile --no-loadscope-reorder tests/test_campaign_e2e.py tests/test_sites_e2e.py \
	  tests/test_rucio_local.py; \
	  status=$$?; bash scripts/with-env.sh python -m drp_campaign.faults && exit $$status

test-fast: envs lint
	@bash scripts/test.sh -m "not integration" --durations=5

benchmark: envs
	@bash scripts/rucio-server.sh start
	@bash scripts/airflow-services.sh start
	@bash scripts/with-env.sh python benchmarks/controller_overhead.py $(CAMPAIGN)

# ruff (pyproject.toml [tool.ruff]): lint, and the formatter's check; `ruff format .` formats.
lint: envs
	@bash scripts/with-env.sh ruff check --quiet . && bash scripts/with-env.sh ruff format --check --quiet .

airflow-start: envs
	@bash scripts/airflow-services.sh start

stop:
	@bash scripts/airflow-services.sh stop
	@bash scripts/rucio-server.sh stop

clean: stop
	rm -rf var

# Benchmarks of the issue's data-movement figures (see the scripts' docstrings). Use your own
# DRP_WORK_DIR / DRP_RUCIO_PORT / DRP_RUCIO_DB to keep them off a running demo.
BENCH_FILES ?= 10000
BENCH_SINGLE ?= 300
.PHONY: bench-registration bench-ingest bench-poll bench-campaign bench-overlap bench-view
# Where a campaign's time goes (one step group per-call vs warm; the 3x3 in Airflow; the same by a
# plain script): ~8 min.
bench-campaign: envs
	@bash scripts/rucio-server.sh start
	@bash scripts/airflow-services.sh start
	@bash scripts/with-env.sh python benchmarks/campaign_cost.py $(CAMPAIGN) $(BENCH_CAMPAIGN_ARGS)

bench-registration: envs
	@bash scripts/rucio-server.sh start
	@bash scripts/with-env.sh python benchmarks/rucio_registration.py --files $(BENCH_FILES) --single $(BENCH_SINGLE)

bench-ingest: envs
	@bash scripts/with-env.sh bash -c '"$$DRP_STACK_PREFIX/bin/python" benchmarks/ingest_hop.py'

# Poll cost of 500 deferred BPS runs vs a poking sensor per run (~4 min; the PanDA part uses its own
# iDDS on ports 8096/8097 and database drp_idds_pollbench, stopped and dropped after).
POLL_ARGS ?=
bench-poll: envs
	@bash scripts/with-env.sh python benchmarks/bps_poll_cost.py $(POLL_ARGS)

# What the site-independence QA's overlap tracts cost (core time, bytes moved; 5% and 10% of
# tracts processed twice): one 3x3 run in the running services, ~4 min (benchmarks/overlap_cost.py).
bench-overlap: envs
	@bash scripts/rucio-server.sh start
	@bash scripts/airflow-services.sh start
	@bash scripts/with-env.sh python benchmarks/overlap_cost.py $(CAMPAIGN) $(RUN_ID)

# How fast the campaign view answers: DR1-shaped run records (up to 60,000 task instances) read,
# built and rendered, ~1 min; with VIEW_ARGS="--base-url URL --run-id RUN" also the real pages of a
# run in a running Airflow (benchmarks/view_latency.py).
bench-view: envs
	@bash scripts/with-env.sh python benchmarks/view_latency.py $(VIEW_ARGS)

# The planner (issue #16): its wall time and memory for DR1 and DR2, makespan / lower bound of the
# fixed shares and of the capacity-aware plan side by side, what-ifs; the PNGs into docs/plan. ~10 s.
.PHONY: bench-plan
bench-plan: envs
	@bash scripts/with-env.sh python benchmarks/planner.py --pictures docs/plan
