# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
URL := http://127.0.0.1:$(or $(RECSYS_WEB_PORT),6066)
WORKERS ?= 1
PORTS := $(shell seq $(or $(RECSYS_WEB_PORT),6066) $$(( $(or $(RECSYS_WEB_PORT),6066) + $(WORKERS) - 1 )))
export OPENBLAS_NUM_THREADS := 1

.PHONY: run up down test lint format services topics feed browser screenshot clean-data lock

$(BIN)/.installed: pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is required (Python 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements.lock -e '.[dev]'
	@touch $@

## Resolve pyproject.toml's dependencies afresh in a scratch virtualenv into requirements.lock
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q -e '.[dev]'
	{ sed -n 1,2p requirements.lock; .lock-venv/bin/pip freeze --exclude-editable; } > requirements.lock.new
	mv requirements.lock.new requirements.lock && rm -rf .lock-venv

## Kafka and Redis in the background (installed and resolved on first use)
services:
	scripts/services.sh start

topics: $(BIN)/.installed services
	$(BIN)/python -m app create-topics

## Kafka, Redis and WORKERS workers (default 1) in the background, on ports 6066, 6067, ...;
## returns once each one's /health answers 200
up: topics
	@for port in $(PORTS); do RECSYS_WEB_PORT=$$port scripts/worker.sh start || exit 1; done

## Stop the worker, Kafka and Redis; all data under .data/ is kept
down:
	scripts/worker.sh stop-all
	scripts/services.sh stop

feed: up
	$(BIN)/python -m app load-items data/sample-items.csv --url $(URL)
	$(BIN)/python -m app feed data/sample-events.csv --url $(URL)

## Everything running, the bundled sample fed, then the worker's log followed
run: feed
	@echo
	@echo "Open $(URL)/?user=c15311 : the demo page, one customer's live recommendations"
	@echo "     $(URL)/docs        : the API, to read and try"
	@echo "From a terminal:"
	@echo "  curl $(URL)/recommend/c15311      a customer's recommendations"
	@echo "  curl $(URL)/users/c15311          the interactions behind them"
	@echo "  curl $(URL)/popular               trending items"
	@echo "  .venv/bin/python -m app play --rate 50   play the shop: the sample again, from its clock"
	@echo "  curl $(URL)/readyz                ready (tables recovered)"
	@echo "Following the worker log (Ctrl-C stops following; 'make down' stops the services)."
	@tail -n 5 -f .data/logs/worker-$(or $(RECSYS_WEB_PORT),6066).log

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## Headless Chromium and its WebDriver for the demo page's browser test (Debian packages)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	if [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq chromium chromium-driver; \
	else \
		echo "The browser test needs chromium and chromedriver: sudo apt-get install chromium chromium-driver"; \
		exit 1; \
	fi

## The README's screenshot of the demo page (docs/demo.png), from the product `make run` started
screenshot: browser
	$(BIN)/python scripts/screenshot.py --url $(URL) --out docs/demo.png

## Lint, then unit tests and integration tests against a real Kafka and Redis and a browser
test: lint services browser
	$(BIN)/pytest -q

## Remove all local data (stop first with 'make down')
clean-data:
	rm -rf .data
