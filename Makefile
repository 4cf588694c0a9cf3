# Each target creates its virtual environment if it is missing, installs the
# project into it (again whenever setup.cfg changes) and runs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): setup.cfg pyproject.toml constraints/dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints/dev.txt -e '.[test,torch,examples]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/gunpoint.py

# pytest exits with 5 when it collected no test: report that as a failure.
test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

# PyTorch's CPU timings depend on how its idle threads wait; the suite prints the policy.
bench: $(STAMP)
	OMP_WAIT_POLICY=passive $(PY) benchmarks/conv_suite.py $(BENCH_ARGS)
	$(PY) benchmarks/layer_by_layer.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
