# telemon — the two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# The dashboard's browser tests drive Debian's Chromium (Playwright never downloads a browser).
CHROMIUM := /usr/bin/chromium
# The stock Node FHIR clients that tests/api/test_stock_clients.py drives (exact versions from
# the lock file; node and npm come with the machine)
NODE_CLIENTS := tests/api/node_clients/node_modules/.package-lock.json

.PHONY: run test lint typecheck bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

## Set up, load the demo data into the embedded SQLite database and serve on http://127.0.0.1:8080
## (authorization off for the local demo: TELEMON_AUTH=open, which serves on loopback only;
## `TELEMON_AUTH=oauth make run` serves with OAuth, and the demo prints how to use its clients).
## TELEMON_BASE_URL is the public URL (required with oauth: tokens and links are built from it).
RUN_ENV = TELEMON_AUTH=$${TELEMON_AUTH:-open} \
	TELEMON_BASE_URL=$${TELEMON_BASE_URL:-http://127.0.0.1:8080/fhir}
run: $(STAMP)
	$(RUN_ENV) $(BIN)/telemon demo
	$(RUN_ENV) $(BIN)/telemon serve

## Set up and run every test, on SQLite and PostgreSQL (starts the local PostgreSQL if it is down);
## the browser tests save screenshots in test-artifacts/dashboard/
test: $(STAMP) $(CHROMIUM) $(NODE_CLIENTS)
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	$(BIN)/ruff check service tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/pytest -q -p no:cacheprovider -n 2

## Install the stock Node clients from their lock file
$(NODE_CLIENTS): tests/api/node_clients/package-lock.json
	cd tests/api/node_clients && npm ci --no-audit --no-fund --loglevel=error

## Debian's chromium for the browser tests, installed with apt-get when missing (needs root)
$(CHROMIUM):
	@if [ "$$(id -u)" = "0" ]; then \
		echo "Installing Debian's chromium for the dashboard's browser tests"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	else \
		echo "The dashboard's browser tests need $(CHROMIUM). Install it as root:" >&2; \
		echo "  apt-get update && apt-get install -y chromium    (then run make test again)" >&2; \
		exit 1; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check service tests bench
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

## On demand: the ingest/search benchmark (PostgreSQL, live server)
bench: $(STAMP)
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) build *.egg-info telemon.sqlite telemon.sqlite-wal telemon.sqlite-shm demo-keys
