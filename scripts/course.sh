#!/usr/bin/env bash
# Run the whole course (every notebook in order, with papermill) on a profile (default: tiny).
# Executed notebooks and a results summary land in runs/<profile>/ (git-ignored).
EXTRAS="${EXTRAS:-batch}"  # papermill: the batch runner's only extra need
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
python -m memdec_helpers.run --profile "${1:-tiny}" "${@:2}"
