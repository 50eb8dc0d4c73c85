#!/usr/bin/env bash
# Run the whole test suite: unit tests of memdec_helpers + every notebook on `tiny` under nbval,
# once as shipped (exercise stubs: each check prints its hint), then a second pass with every
# exercise answered by memdec_helpers.solutions (each check must accept it) on the lessons whose
# checks work on the lesson's own data (a real model, index and results table). The other checks
# (00, 03, 05) are arithmetic on numbers any array gives: tests/test_exercises.py runs them with
# their solutions, their stubs and typical wrong answers.
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
export MPLBACKEND=Agg PYTHONHASHSEED=0 MEMDEC_PROGRESS=line  # bars leave one line in notebooks
python scripts/set_repo_url.py --check --setup-cells  # badges, setup cells = memdec_helpers/lessons/publish.py
python -m pytest tests notebooks --nbval-lax "$@"
# reuses every artifact of the first pass (datastore, index, targets, runs, cached log-probs)
MEMDEC_SOLUTIONS=1 python -m pytest --nbval-lax "$@" notebooks/01_datastore.ipynb \
    notebooks/02_knn_distributions.ipynb notebooks/04_interpolation.ipynb notebooks/06_ablations.ipynb
