#!/usr/bin/env bash
# Run the whole course (every notebook in order, with papermill) on a profile (default: tiny).
# Executed notebooks and a results summary land in runs/<profile>/ (git-ignored). Further
# arguments go to the runner: bash scripts/course.sh my.yaml --keep-going --only 02 04
EXTRAS="${EXTRAS:-batch}"  # papermill: the batch runner's only extra need
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
python -m memdec_helpers.run --profile "${1:-tiny}" "${@:2}"
