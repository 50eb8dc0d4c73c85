"""Progress bars: one summary line (or nothing) where a saved notebook would keep them, live
bars in a terminal, and no TqdmWarning from tqdm.auto in a kernel without ipywidgets."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tqdm import tqdm

from memdec_helpers import progress
from memdec_helpers.progress import OneLineBar, progress_bar, progress_mode
from memdec_helpers.core.windows import WindowSpec
from memdec_helpers.runtime.batching import sized_window_batches


@pytest.fixture
def mode(monkeypatch):
    return lambda value: monkeypatch.setenv("MEMDEC_PROGRESS", value)


def test_line_mode_prints_one_line_when_done(mode, capsys):
    mode("line")
    bar = progress_bar(range(50), desc="build")
    for i, _ in enumerate(bar):
        if i == 25:
            assert capsys.readouterr().err == ""  # nothing while it runs
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\r" not in err
    assert err.startswith("build: 100%") and "50/50" in err


def test_line_mode_with_updates_and_postfix_closes_once(mode, capsys):
    mode("line")
    bar = progress_bar(total=10, desc="train", initial=2)
    bar.update(8)
    bar.set_postfix(loss="1.234")
    bar.close()
    bar.close()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "10/10" in err and "loss=1.234" in err


def test_off_mode_and_disable_print_nothing(mode, capsys):
    mode("off")
    list(progress_bar(range(5), desc="x"))
    mode("line")
    list(progress_bar(range(5), desc="x", disable=True))
    assert capsys.readouterr().err == ""


def test_modes_pick_the_bar_class(mode, monkeypatch):
    mode("bar")
    bar = progress_bar(range(3))
    assert type(bar) is tqdm
    bar.close()
    mode("auto")  # pytest's stderr is no terminal and this is no notebook: one line
    assert progress_mode() == "line" and isinstance(progress_bar(range(3)), OneLineBar)
    mode("Fancy")
    with pytest.raises(ValueError, match="MEMDEC_PROGRESS='fancy'.*line"):
        progress_bar(range(3))


def test_package_stages_leave_one_line(mode, capsys, gpt2):
    mode("line")
    tokens = np.arange(100) % 7
    sized, _ = sized_window_batches(gpt2, tokens, WindowSpec(16, 8, 2), "keys",
                                    torch.device("cpu"), progress=True, desc="keys")
    batches = list(sized)
    assert len(batches) > 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("keys: 100%")


TQDM_AUTO_IN_A_KERNEL = """
import sys, types, warnings
import IPython  # tqdm.autonotebook asks IPython.get_ipython()
sys.modules["ipykernel.zmqshell"] = types.ModuleType("ipykernel.zmqshell")  # looks like Jupyter
sys.modules["ipywidgets"] = None  # ... without ipywidgets
warnings.simplefilter("always")
{first}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import tqdm.auto
print(sum("IProgress" in str(w.message) for w in caught))
"""


@pytest.mark.parametrize("first, warned", [("", "1"), ("import memdec_helpers.progress", "0")])
def test_no_tqdm_warning_once_the_package_is_imported(first, warned):
    """The control run (nothing imported first) shows the warning really fires."""
    done = subprocess.run([sys.executable, "-c", TQDM_AUTO_IN_A_KERNEL.format(first=first)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == warned, done.stdout + done.stderr


def test_every_bar_of_the_package_goes_through_progress_bar():
    """A direct tqdm in a module would fill a saved notebook again (one bar line per update)."""
    package = Path(progress.__file__).parent
    direct = [path.name for path in sorted(package.glob("*.py")) if path.name != "progress.py"
              and re.search(r"^\s*(from|import) tqdm\b", path.read_text(), re.MULTILINE)]
    assert direct == [], f"use memdec_helpers.progress.progress_bar in {direct}"
