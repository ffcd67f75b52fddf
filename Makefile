# midge: every target creates .venv on first use (pinned requirements.txt), so on a fresh
# machine `make test` and `make demo` are the only two commands needed.
PY3    ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
STUBS  := .typings/.installed
MP     := $(BIN)/micropython
HEAP   ?= 128K

.PHONY: all system-deps venv test test-cpython test-micropython lint format typecheck mpy-check bench demo clean

all: test

$(STAMP): requirements.txt pyproject.toml
	$(PY3) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

# micropython-stubs put machine.pyi etc. at the top of site-packages: keep them out of the venv.
$(STUBS): $(STAMP)
	$(BIN)/pip install -q --target .typings/esp32 micropython-esp32-stubs==1.29.0.post1
	$(BIN)/pip install -q --target .typings/rp2 micropython-rp2-rpi-pico-w-stubs==1.29.0.post1
	touch $(STUBS)

venv: $(STAMP) $(STUBS)

# Mosquitto is the reference broker the tests talk to; installed from Debian when missing.
system-deps:
	@if ! { command -v mosquitto || [ -x /usr/sbin/mosquitto ]; } >/dev/null 2>&1 || \
	    ! command -v mosquitto_pub >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing mosquitto (apt-get)"; apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients openssl >/dev/null; \
	  else echo "WARNING: mosquitto/mosquitto-clients/openssl missing; tests that need them skip (sudo apt-get install mosquitto mosquitto-clients openssl)"; fi; \
	fi

test: system-deps venv lint typecheck mpy-check test-cpython test-micropython

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Board code against each board's MicroPython stubs (pythonVersion 3.8 catches CPython-only APIs).
typecheck: $(STUBS)
	$(BIN)/pyright -p pyright-esp32.json
	$(BIN)/pyright -p pyright-rp2.json

# Every board file must compile with MicroPython's own compiler for each board's arch.
mpy-check: $(STAMP)
	$(BIN)/python -m host_tools.mpycheck

test-cpython: $(STAMP)
	$(BIN)/python -m pytest

test-micropython: $(STAMP)
	MIDGE_MP_HEAP=$(HEAP) $(BIN)/python tests/run_micropython.py

bench: $(STAMP)
	$(BIN)/midge bench

demo: $(STAMP)
	$(BIN)/python -m host_tools.demo

clean:
	rm -rf $(VENV) .typings build *.egg-info
