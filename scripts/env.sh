# Source me: create or reuse ./.venv and install the package with the extras in $EXTRAS
# (default `test`: pytest, nbval and the `batch` extra, papermill, that runs the notebooks).
# TORCH_SPEC picks the torch to install when none is present (CI: a fast CPU build).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
EXTRAS="${EXTRAS:-test}"
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10), "Python 3.10+ is needed"'
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
STAMP="$VENV/.memdec-installed-$EXTRAS"
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
    python -m pip install -q --upgrade pip
    python -c 'import torch' 2>/dev/null || python -m pip install -q "${TORCH_SPEC:-torch}"
    # -qq: errors only (an editable install of a flat layout always prints a 10-line notice);
    # the wheel itself builds without warnings: python scripts/check_wheel.py
    python -m pip install -qq -e "$ROOT[$EXTRAS]"
    python -m ipykernel install --sys-prefix --name python3 >/dev/null 2>&1 || true
    touch "$STAMP"
fi
cd "$ROOT"
