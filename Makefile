# The course's two commands: `make course` and `make test`. Everything else is a step they call.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# This machine serves these wheels locally; elsewhere override, e.g. make course TORCH="torch torchvision".
TORCH ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed
TOY := data/toy
TOY_STAMP := $(TOY)/.generated

MODELS_STAMP := $(TOY)/runs/.trained

.PHONY: setup toy models retrain-models tiny-weights reference course lab student test test-fast test-slow test-slow-a test-slow-b test-unit test-models test-notebooks test-full test-student rehearse teaching ablations install-cells lint clean

setup: $(STAMP)

# pip byte-compiles one file at a time; compileall does it on every core after the installs (like pip, it skips
# the few files some packages ship for other Pythons, hence the ignored status).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile $(TORCH)
	$(PY) -m pip install --quiet --no-compile -e ".[course,test]"
	$(PY) -m compileall -q -j 0 $$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") >/dev/null || true
	touch $(STAMP)

toy: $(TOY_STAMP)

# The toy datasets; models made for older toy data are dropped.
$(TOY_STAMP): $(STAMP) $(wildcard sprc_lib/data/toy/*.py) sprc_lib/data/schema.py
	rm -rf $(TOY)/runs $(TOY)/cache $(TOY)/tiny-blip2
	$(PY) -m sprc_lib toy-data --out $(TOY)
	touch $(TOY_STAMP)

# The tiny models: the weights shipped in the package (the course's reference, the same on every machine),
# copied in seconds. `make models RETRAIN=1` pretrains and trains them all on this machine instead (about
# ten CPU minutes): a local retraining, whose numbers differ from the reference's within the README's band.
models: $(if $(RETRAIN),retrain-models,$(MODELS_STAMP))

$(MODELS_STAMP): $(TOY_STAMP) $(wildcard sprc_lib/course/tiny_weights/*/model.safetensors)
	$(PY) -m sprc_lib course --data-path $(TOY) --models-only
	touch $(MODELS_STAMP)

retrain-models: $(TOY_STAMP)
	$(PY) -m sprc_lib course --data-path $(TOY) --models-only --retrain
	touch $(MODELS_STAMP)

course: setup toy models
	$(PY) -m sprc_lib course --data-path $(TOY)

# JupyterLab on the course, rooted at notebooks/ (the pairing with the .py files is configured there);
# as root (containers, Colab-like machines) JupyterLab refuses to start without --allow-root.
lab: setup toy
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

# The unit tests and the notebooks under nbval in both modes, side by side: the unit tests leave a core idle
# much of the time (subprocesses starting, single-threaded steps), and a tiny-mode kernel uses one core.
# One torch thread per process: jobs with two threads each on two cores spend their time waiting on each
# other's threads (measured: an epoch of the tiny re-ranker took 58-283 s beside other jobs, 8 s alone). A test that
# asks for two threads gets threads that sleep when they wait (OMP_WAIT_POLICY), not spin on a core another job
# needs. The longest jobs start first, so that the short ones fill the cores at the end.
test: setup toy models
	$(PY) -m ruff check sprc_lib tests notebooks
	OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE $(MAKE) --no-print-directory -j3 --output-sync=target \
		test-slow-a test-slow-b test-notebooks test-full test-fast

# Every unit test but the retraining (make test runs them as two jobs, test-fast and test-slow, which pack
# the two cores better than one long job).
test-unit: setup toy models
	$(PY) -m pytest tests -m "not models" --durations=15 -p no:cacheprovider

test-slow: test-slow-a test-slow-b

# The slow unit tests in two halves of about equal time (measured), so that no one job is make test's long pole.
SLOW_A := tests/test_course.py tests/test_browser.py tests/test_reference.py tests/test_train.py tests/test_wheel.py \
	tests/test_lab_pairing.py
SLOW := -m "(slow or browser) and not models" --durations=10 -p no:cacheprovider

test-slow-a: setup toy models
	$(PY) -m pytest $(SLOW_A) $(SLOW)

test-slow-b: setup toy models
	$(PY) -m pytest tests $(addprefix --ignore=,$(SLOW_A)) $(SLOW)

# The toy track retrained here (what `make models RETRAIN=1` does: about 11 CPU minutes), checked against the
# band measured over seeds. Too long for make test's budget; CI runs it after make test.
test-models: setup toy models
	$(PY) -m pytest tests -m models --durations=5 -p no:cacheprovider

# The inner loop: the unit tests without the slow, browser and retraining ones.
test-fast: setup toy models
	OMP_NUM_THREADS=1 $(PY) -m pytest tests -m "not slow and not browser and not models" --durations=10 \
		-p no:cacheprovider -q

test-notebooks: setup toy models
	$(PY) -m pytest notebooks --nbval-lax --nbval-current-env -p no:cacheprovider -p tests.support.quiet_cells

STANDINS := build/standins

# The full track on stand-ins in the real formats (tests/support/standins.py): every notebook again, SPRC_MODE=full.
test-full: setup toy models
	$(PY) tests/support/standins.py $(STANDINS)
	env $$(cat $(STANDINS)/full.env) $(PY) -m pytest notebooks --nbval-lax --nbval-current-env -p no:cacheprovider \
		-p tests.support.quiet_cells

# After a change to the toy data or the tiny recipes: retrain, ship what was trained (sprc_lib/course/shipped.py),
# then regenerate the reference numbers the docs quote from the shipped weights (sprc_lib/course/reference.py).
tiny-weights: retrain-models
	$(PY) -c "from sprc_lib.course.shipped import main; main(['$(TOY)'])"
	$(PY) -m sprc_lib.course.reference --data-path $(TOY)

# The reference numbers and the doc blocks that quote them, from the shipped weights (a minute).
reference: toy
	$(PY) -m sprc_lib.course.reference --data-path $(TOY)

# The full track at BLIP-2 ViT-g's real size, random weights, on this machine (sprc_lib/course/rehearse.py): each
# command's peak memory, time and disk against a free Colab session, in build/rehearsal/rehearsal.md. Not part of
# make test: it writes several GB of stand-ins and runs for many minutes.
rehearse: setup toy
	$(PY) -m sprc_lib.course.rehearse build/rehearsal

# The generated parts of notebooks/TEACHING.md: the two labs, from the notebooks executed in tiny mode (a few
# minutes), and the rubric, from their checks and worked answers.
teaching: setup toy models
	$(PY) -m sprc_lib.course.lab_plan
	$(PY) -m sprc_lib.course.rubric

# The homework's ablations measured over seeds on the toy CIRR: ablations.json and
# its block in notebooks/TEACHING.md.
ablations: setup toy models
	$(PY) -m sprc_lib.course.ablations

# Copies for a class, by Otter-Grader: the students' notebooks without solutions (stubs + checks, public tests in
# build/student/tests), and the teacher's solved notebooks and autograder zips in build/autograder.
student: setup
	$(PY) -m sprc_lib.course.student notebooks build/student build/autograder

# The student copies run to their end, every check saying "not yet", with quiet outputs; the autograder gives a
# solved notebook full marks. Their lesson cells are the course's own (test_student.py), which make test's nbval
# run executes, so this run is CI's, after make test (like test-models), not make test's.
test-student: student toy models
	$(PY) -m pytest tests/support/student_run.py -p no:cacheprovider

# The Colab install cell is declared once (sprc_lib/course/colab.py); this writes it into every notebook.
install-cells: setup
	$(PY) -c "from pathlib import Path; from sprc_lib.course.colab import write_install_cells as w; print(w(Path('notebooks')))"
	$(VENV)/bin/jupytext --sync notebooks/*.py

lint: setup
	$(PY) -m ruff check sprc_lib tests notebooks

clean:
	rm -rf $(VENV) $(TOY) build
