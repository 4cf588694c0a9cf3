# Each target creates the virtual environment of its BrainPy stack if it is missing (or made
# with another Python), installs the project into it (again whenever setup.cfg or the
# constraints change) and runs. Each stack installs the versions CI tested (constraints/).
#
#   STACK=default      BrainPy 2.9 on JAX 0.12, Python 3.12+       -> .venv      (the default)
#   STACK=brainpy-2.8  BrainPy 2.8 on JAX 0.10, Python 3.11        -> .venv-2.8
#   STACK=brainpy-2.6  BrainPy 2.6 + brainpylib + taichi, Python 3.11 -> .venv-2.6
#
# `make test` runs the lint and type check (`make lint`: ruff, mypy), then the whole suite on
# the default stack; on the other stacks what differs there (the tests marked `every_stack`; tests/conftest.py says why
# each is); and installs the package from setup.cfg's ranges alone into fresh environments of
# Python 3.11 and 3.12+ (on the latter, the built wheel, which then runs the README's
# examples).
# The tests run over the machine's cores (pytest-xdist), with pairwise grids;
# `make test-full` runs every grid whole and the long property profile, on every stack, and
# the event path's tests once more without the C++ kernels (`make test-fallback`).
# `make test-stack STACK=...` runs the whole suite on one stack.
# `make docs` builds the documentation site (docs/_build/html) on the default stack.
# `make constraints` re-resolves the stacks' constraints files from setup.cfg's ranges (what
# `pip install .` gives users today; STACKS= chooses the stacks, all three by default), shows
# what moved, and says to run `make test` on the result (CHECK=1: runs `make test-stack` for
# each re-resolved stack itself).
STACK ?= default

# $(call find_python,CONDITION on v = sys.version_info,CANDIDATES): the first candidate that
# runs and meets the condition (pyenv's installed versions are candidates too).
find_python = $(firstword $(foreach p,$(2),$(if $(shell $(p) -c 'import sys; v = sys.version_info; sys.exit(not ($(1)))' 2>/dev/null && echo y),$(p))))
PY312_CHECK := v.major == 3 and v.minor >= 12
PY311_CHECK := v.major == 3 and v.minor == 11
PYTHON312 = $(call find_python,$(PY312_CHECK),python3.12 $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) python3.13 $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13) python3)
PYTHON311 = $(call find_python,$(PY311_CHECK),python3.11 $(wildcard $(HOME)/.pyenv/versions/3.11*/bin/python3.11) python3)

ifeq ($(STACK),default)
VENV := .venv
CONSTRAINTS := -c constraints/dev.txt -c constraints/default.txt
# No torch extra: the registry serves PyTorch for Python 3.12 only as its CUDA build; the
# tests that need PyTorch run on the BrainPy 2.8 stack.
EXTRAS := test,examples,docs,nir,lint
PY_CHECK := $(PY312_CHECK)
PYTHON ?= $(PYTHON312)
else ifeq ($(STACK),brainpy-2.8)
VENV := .venv-2.8
CONSTRAINTS := -c constraints/dev.txt -c constraints/brainpy-2.8.txt
EXTRAS := test,torch,examples,nir,peers
# Sinabs, a second NIR writer for the exchange tests, pins nir<=1.0.4 and wants samna (its
# hardware library), which the tests do not need: it is installed beside nir 1.0.8 without
# its dependencies, with pbr, which it imports (versions: constraints/brainpy-2.8.txt).
NO_DEPS := sinabs pbr
PY_CHECK := $(PY311_CHECK)
PYTHON ?= $(PYTHON311)
else ifeq ($(STACK),brainpy-2.6)
VENV := .venv-2.6
CONSTRAINTS := -c constraints/dev.txt -c constraints/brainpy-2.6.txt
EXTRAS := brainpylib,test,torch,examples
PY_CHECK := $(PY311_CHECK)
PYTHON ?= $(PYTHON311)
else
$(error STACK must be 'default', 'brainpy-2.8' or 'brainpy-2.6', got '$(STACK)')
endif

PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Every source file of the package: the figures are redrawn when one changes.
PACKAGE_SOURCES := $(shell find bp_conv_ext -name "*.py")

.PHONY: env envs demo test test-full test-stack test-fallback test-install lint constraints constraints-stack bench bench-peers docs clean

$(STAMP): setup.cfg pyproject.toml $(wildcard constraints/*.txt)
	@$(PY) -c 'import sys; v = sys.version_info; sys.exit(not ($(PY_CHECK)))' 2>/dev/null || { \
		test -n "$(PYTHON)" || { echo "STACK=$(STACK) needs Python $(if $(filter default,$(STACK)),3.12 or later,3.11) (README: Set-up)" >&2; exit 1; }; \
		rm -rf $(VENV) && echo "$(PYTHON) -m venv $(VENV)" && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet -c constraints/dev.txt --upgrade pip
	$(PY) constraints/requirements.py $(EXTRAS) > $(VENV)/requirements.txt
	$(PY) -m pip install --quiet $(CONSTRAINTS) -r $(VENV)/requirements.txt
	$(if $(NO_DEPS),$(PY) -m pip install --quiet --no-deps $(CONSTRAINTS) $(NO_DEPS))
	flock .install.lock $(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# `make env`: this stack's environment; `make envs`: every stack's, side by side (`make test`
# starts with it; their output interleaves).
env: $(STAMP)
envs:
	@$(MAKE) --no-print-directory env STACK=brainpy-2.8 & a=$$!; \
	$(MAKE) --no-print-directory env STACK=brainpy-2.6 & b=$$!; \
	$(MAKE) --no-print-directory env STACK=default; c=$$?; \
	wait $$a; a=$$?; wait $$b; b=$$?; exit $$((a || b || c))

demo: $(STAMP)
	$(PY) examples/gunpoint.py

# Over every core (pytest-xdist); JOBS=1 runs in this process.
JOBS ?= auto
PYTEST = $(PY) -m pytest -q -rs --durations=10 $(if $(filter 1,$(JOBS)),,-n $(JOBS))

# $(call timed,COMMAND): runs COMMAND and prints its wall time (CI reads the stages' times).
timed = @start=$$(date +%s); $(1); rc=$$?; \
	echo "== [$(1)]: $$(($$(date +%s) - start)) s, exit $$rc"; exit $$rc

test:
	$(call timed,$(MAKE) --no-print-directory -j2 envs test-install)
	$(call timed,$(MAKE) --no-print-directory lint)
	$(call timed,$(MAKE) --no-print-directory test-stack STACK=default)
	$(call timed,$(MAKE) --no-print-directory test-stack STACK=brainpy-2.8 PYTEST_ARGS='-m every_stack')
	$(call timed,$(MAKE) --no-print-directory test-stack STACK=brainpy-2.6 PYTEST_ARGS='-m every_stack')

# Every grid whole (BP_CONV_EXT_FULL_GRIDS) and 400 examples per property, on every stack and
# without the C++ kernels: run it before landing a change to the kernels (over an hour here).
FULL := BP_CONV_EXT_FULL_GRIDS=1 HYPOTHESIS_PROFILE=nightly $(MAKE) --no-print-directory
test-full:
	$(FULL) test-stack test-fallback STACK=default FALLBACK_ARGS='$(FALLBACK_TESTS_FULL)'
	$(FULL) test-stack STACK=brainpy-2.8
	$(FULL) test-stack STACK=brainpy-2.6

# The lint (ruff) and the type check (mypy) of the package, the tests, benchmarks, examples and
# docs extension, on the default stack (settings: pyproject.toml), before the tests.
lint: $(STAMP)
	$(if $(filter default,$(STACK)),,$(error the lint runs on the default stack: make lint))
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# pytest exits with 5 when it collected no test: report that as a failure.
test-stack: $(STAMP)
	@echo "== tests on the $(STACK) stack ($(VENV)) $(PYTEST_ARGS) =="
	$(PYTEST) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

# The C++ kernels are built on first use into $$BP_CONV_EXT_CACHE; with no compiler and an
# empty cache the event path falls back to the numba kernels, which these tests then check.
# The numba kernels are also forced through every event-path test of the main run
# (tests/conftest.py's EVENT_RUNTIMES), and the fallback itself (no compiler or a failing one:
# the numba kernels, one warning, the same numbers) is tests/event/test_cxx_kernels.py's: this
# run, part of `make test-full`, repeats the kernels' parity, gradients and bad input, the
# padding modes and the properties with the fallback as the default kernels.
FALLBACK_TESTS := tests/event/test_backends.py tests/test_bad_input.py tests/ops/test_gradients.py
FALLBACK_TESTS_FULL := $(FALLBACK_TESTS) tests/ops/test_padding_modes.py tests/ops/test_properties.py
FALLBACK_ARGS ?= $(FALLBACK_TESTS)
test-fallback: $(STAMP)
	@echo "== event-path tests without the C++ kernels ($(VENV)) =="
	@cache=$$(mktemp -d); export CXX=/nonexistent/c++ BP_CONV_EXT_CACHE=$$cache; \
	$(PY) -W ignore -c "import bp_conv_ext as b; k = b.event_kernel('cpu'); \
	assert k == 'numba', k; print('event-driven CPU kernels:', k)" && \
	$(PYTEST) $(FALLBACK_ARGS); rc=$$?; \
	rm -rf $$cache; exit $$rc

# The package installed with no constraints into a fresh environment of Python 3.12 or later
# and of 3.11 (side by side): the ranges of setup.cfg must resolve to the stack that Python gets
# (BrainPy 2.9 on Python 3.12+, 2.8 on 3.11) and the package must import with it. (The BrainPy
# 2.6 stack is installed with its constraints file: the registry serves newer builds that
# setup.cfg allows.) On the newer Python (3.13 where there is one, a Python that no stack's
# environment uses; else 3.12) what is installed is the release: the sdist and the wheel built
# once (`python -m build`, checked by `twine check`), the wheel alone installed, its C++
# kernels compiled into an empty cache and the README's "Ten lines" examples run
# (tests/helpers/check_install.sh says how); on 3.11, `pip install .`.
PYTHON313 = $(call find_python,v.major == 3 and v.minor == 13,python3.13 $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13))
test-install:
	@test -n "$(PYTHON312)" -a -n "$(PYTHON311)" || { echo "test-install needs Python 3.12+ and 3.11" >&2; exit 1; }
	@tests/helpers/check_install.sh $(or $(PYTHON313),$(PYTHON312)) 2.9. wheel & new=$$!; \
	tests/helpers/check_install.sh $(PYTHON311) 2.8.; old=$$?; \
	wait $$new && test $$old -eq 0

# Each stack's constraints file re-resolved (constraints/resolve.sh): in a fresh environment of
# the stack's Python, its extras (and NO_DEPS packages) installed from setup.cfg's ranges,
# bound only by constraints/dev.txt and the pins the file's header holds (the 2.6 stack's
# BrainPy, taichi and JAX; the 2.8 stack's brainpy_state), then `pip freeze` written under
# that header. The stacks resolve side by side; then what changed is shown.
STACKS ?= default brainpy-2.8 brainpy-2.6
constraints:
	@pids=; for s in $(STACKS); do \
		$(MAKE) --no-print-directory constraints-stack STACK=$$s & pids="$$pids $$!"; done; \
	rc=0; for p in $$pids; do wait $$p || rc=1; done; \
	git --no-pager diff --stat constraints/; git --no-pager diff constraints/; \
	if [ $$rc -ne 0 ]; then echo "make constraints: a stack failed to resolve" >&2; exit 1; fi
ifeq ($(CHECK),1)
	@for s in $(STACKS); do $(MAKE) --no-print-directory test-stack STACK=$$s || exit 1; done
else
	@echo "now run: make test (or make test-stack STACK=... for one stack)"
endif

constraints-stack:
	@test -n "$(PYTHON)" || { echo "STACK=$(STACK) needs Python $(if $(filter default,$(STACK)),3.12 or later,3.11)" >&2; exit 1; }
	@constraints/resolve.sh $(STACK) $(PYTHON) $(EXTRAS) $(NO_DEPS)

# PyTorch's CPU timings depend on how its idle threads wait, and every contender's on whether
# the one before it gave its memory back to the system (fresh pages cost ~1 us each here):
# the suite runs with passive OpenMP threads and a malloc that keeps freed memory, and prints
# both settings. It also draws the event-driven speed-ups against spike density for
# docs/performance.md.
# Each run writes what it prints into a folder of its own, BENCH_OUT: the pages include a run's
# files by their path, and `make docs` fails on a number that a page quotes and the result
# files it names do not hold (docs/_ext/measured.py).
BENCH_ENV := OMP_WAIT_POLICY=passive MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824
BENCH_OUT ?= benchmarks/results/cpu-$(shell date +%F)
# $(call bench_to,FILE,SCRIPT ARGS): runs a benchmark, printing its output and writing it to FILE.
bench_to = $(BENCH_ENV) bash -o pipefail -c '$(PY) $(2) | tee $(BENCH_OUT)/$(1)'
bench: $(STAMP)
	mkdir -p $(BENCH_OUT)
	$(call bench_to,suite.md,benchmarks/conv_suite.py --figure docs/figures/event_density.png $(BENCH_ARGS))
	$(call bench_to,layer_by_layer.md,benchmarks/layer_by_layer.py $(BENCH_ARGS))
	$(call bench_to,delays_speed.md,benchmarks/delays.py $(BENCH_ARGS))
	$(call bench_to,spiking_layer_cpu.md,benchmarks/spiking_layer_cpu.py $(BENCH_ARGS))

# Training steps of one spiking CNN in SpikingJelly (PyTorch) and here, side by side: on the
# BrainPy 2.8 stack, which has both, whatever STACK says; writes peers.md and peers.json.
ifeq ($(STACK),brainpy-2.8)
bench-peers: $(STAMP)
	mkdir -p $(BENCH_OUT)
	$(call bench_to,peers.md,benchmarks/peers.py --out $(BENCH_OUT) $(BENCH_ARGS))
else
bench-peers:
	$(MAKE) --no-print-directory bench-peers STACK=brainpy-2.8 BENCH_OUT=$(BENCH_OUT)
endif

# The examples draw the tutorial's figures (the raster from a --quick run, the learning curves
# from 100 of the 400 GunPoint epochs, in both BrainPy APIs), then the site is built and every
# example in it runs as a doctest; any Sphinx warning fails the build. -E rereads every page,
# so a warning is reported on every run, not only when its page changed.
FIGURES := docs/_build/figures
SPHINX := $(VENV)/bin/sphinx-build -W --keep-going -E -q

ifneq ($(filter docs,$(MAKECMDGOALS)),)
ifneq ($(STACK),default)
$(error the docs build on the default stack only (its `docs` extra): run `make docs`)
endif
endif

$(FIGURES)/raster.png: examples/spike_raster.py $(PACKAGE_SOURCES) $(STAMP)
	$(PY) examples/spike_raster.py --quick --out $(FIGURES)

$(FIGURES)/learning_curve.png: examples/gunpoint.py $(PACKAGE_SOURCES) $(STAMP)
	$(PY) examples/gunpoint.py --epochs 100 --out $(FIGURES)

$(FIGURES)/learning_curve_state.png: examples/gunpoint_state.py examples/gunpoint.py $(PACKAGE_SOURCES) $(STAMP)
	$(PY) examples/gunpoint_state.py --epochs 100 --out $(FIGURES)

# The figures are drawn side by side, then the html and doctest builds run side by side.
DOC_FIGURES := $(FIGURES)/raster.png $(FIGURES)/learning_curve.png $(FIGURES)/learning_curve_state.png
docs: $(STAMP)
	@$(MAKE) --no-print-directory -j3 $(DOC_FIGURES)
	$(SPHINX) -b html docs docs/_build/html & html=$$!; \
	$(SPHINX) -b doctest docs docs/_build/doctest; doctest=$$?; \
	wait $$html; html=$$?; \
	if [ $$html -ne 0 ] || [ $$doctest -ne 0 ]; then \
		echo "docs: html build exit $$html, doctests exit $$doctest" >&2; exit 1; fi
	@echo "docs: open docs/_build/html/index.html"

clean:
	rm -rf .venv .venv-2.8 .venv-2.6 build *.egg-info docs/_build .install.lock
