#!/usr/bin/env bash
# Run the whole test suite: unit tests of memdec_helpers + every notebook on `tiny` under nbval.
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
export MPLBACKEND=Agg PYTHONHASHSEED=0 MEMDEC_PROGRESS=line  # bars leave one line in notebooks
python -m pytest tests notebooks --nbval-lax "$@"
