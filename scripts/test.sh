#!/usr/bin/env bash
# Run the whole test suite: unit tests of memdec_helpers + every notebook on `tiny` under nbval,
# once as shipped (exercise stubs: each check says "not answered yet", no hint), then a second
# pass with every exercise answered by memdec_helpers.lessons.solutions (each check must accept
# it) and every "predict, then run" question answered by the run itself. Every lesson's checks
# work on the lesson's own data, so the second pass covers every exercise.
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
export MPLBACKEND=Agg PYTHONHASHSEED=0 MEMDEC_PROGRESS=line  # bars leave one line in notebooks
python scripts/set_repo_url.py --check --setup-cells  # badges, setup cells = memdec_helpers/lessons/publish.py
python -m pytest tests notebooks --nbval-lax "$@"
# reuses every artifact of the first pass (datastore, index, targets, runs, cached log-probs)
MEMDEC_SOLUTIONS=1 python -m pytest --nbval-lax "$@" notebooks
