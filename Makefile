# headbook — two commands: `make demo` and `make test` (both install .venv when needed).
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
export OMP_NUM_THREADS ?= 2
export MPLBACKEND ?= Agg
export PYTHONHASHSEED ?= 0

.PHONY: env demo test docs docs-ci export-check clean-check nbtest pytest preview quarto-check clean-nbs

env:
	@bash tools/ensure_venv.sh

# the main job on the built-in head: photometric fitting of a public-domain photo that matplotlib ships
demo: env
	@photo=$$($(BIN)/python -c "from matplotlib import cbook; print(cbook.get_sample_data('grace_hopper.jpg', asfileobj=False))"); \
	$(BIN)/headbook reconstruct "$$photo" --model synthhead --out out/reconstruct --overwrite
	$(BIN)/headbook demo --out out/random_head
	@echo "results: out/reconstruct/grace_hopper/ (mesh.obj, params.npz, overlay.png, viewer.html, fit.json) and out/random_head/"

test: env
	$(MAKE) --no-print-directory export-check clean-check quarto-check nbtest pytest docs-ci

# The docs site (tools/docs.py): nbdev's processing of every chapter with one execution (outputs and figures stored)
# into _proc/, checks of the processed notebooks, the offline HTML preview in _preview/, then `quarto render` with
# _quarto.yml into _docs/ -- or, without Quarto, a message that Quarto is the missing piece. `nbdev-docs` renders
# the same _proc/ after `make docs`; on its own, nbdev runs only the cells its API entries need (imports, exports),
# so most of the book's figures are missing from its pages.
docs: env quarto-check
	OMP_NUM_THREADS=1 $(BIN)/python tools/docs.py --workers 2

# CI: the same pipeline up to the Quarto call (the one full execution of the book besides nbtest)
docs-ci:
	OMP_NUM_THREADS=1 $(BIN)/python tools/docs.py --workers 2 --no-quarto

# notebooks and package in sync: export, then fail if headbook/ changed
export-check:
	@$(BIN)/nbdev-export
	@if [ -n "$$(git status --porcelain -- headbook)" ]; then \
	  echo "headbook/ is out of sync with nbs/ (run nbdev-export and commit):"; git status --porcelain -- headbook; exit 1; fi
	@echo "export-check: headbook/ matches nbs/"

# notebooks are committed clean (nbdev-clean keeps papermill's `parameters` tag)
clean-check:
	@$(BIN)/nbdev-clean
	@if [ -n "$$(git status --porcelain -- nbs)" ]; then \
	  echo "nbs/ is not clean (run nbdev-clean and commit):"; git status --porcelain -- nbs; exit 1; fi
	@echo "clean-check: notebooks are clean"

quarto-check:
	@$(BIN)/python tools/check_quarto.py

# two chapters at a time on two cores: one thread each (oversubscribed OpenMP threads spin and slow everything)
nbtest:
	OMP_NUM_THREADS=1 $(BIN)/nbdev-test --n-workers 2 --timing

pytest:
	$(BIN)/python tools/run_pytest.py

# the HTML preview again from what _proc/ holds (no execution); `make docs-ci` builds it with everything else
preview:
	$(BIN)/python tools/preview.py --proc _proc --out _preview

clean-nbs:
	$(BIN)/nbdev-clean
