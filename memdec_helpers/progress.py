"""Progress bars that suit where the code runs, so a saved notebook keeps one line per bar.

Every stage of the package makes its bars with `progress_bar`. The mode comes from the
environment variable MEMDEC_PROGRESS, else is picked automatically:
- `bar`: tqdm's live text bar (a terminal);
- `widget`: tqdm's notebook widget (Jupyter/Colab with ipywidgets);
- `line`: nothing while it runs, then one summary line (a kernel without widgets, papermill,
  nbval, a log file): what a saved notebook should keep;
- `off`: nothing at all.
The batch runner and scripts/test.sh set `line`.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import warnings
from typing import Any, Iterable, Iterator

from tqdm import TqdmWarning, tqdm

MODES = ("auto", "bar", "widget", "line", "off")
ENV = "MEMDEC_PROGRESS"


def _import_tqdm_auto_quietly() -> None:
    """transformers and datasets import tqdm.auto, which warns "IProgress not found" in a kernel
    without ipywidgets; import it once here with that warning silenced (later imports reuse it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TqdmWarning)  # TqdmExperimentalWarning is a subclass
        import tqdm.auto  # noqa: F401


_import_tqdm_auto_quietly()


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (Jupyter, Colab, VS Code, papermill, nbval)."""
    shell = sys.modules.get("IPython")
    get = getattr(shell, "get_ipython", None)
    return get is not None and type(get()).__name__ == "ZMQInteractiveShell"


def progress_mode() -> str:
    """The mode bars use now: MEMDEC_PROGRESS if set, else widget / bar / line by environment."""
    mode = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"{ENV}={mode!r}: use one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    if _in_notebook():
        return "widget" if importlib.util.find_spec("ipywidgets") is not None else "line"
    return "bar" if getattr(sys.stderr, "isatty", lambda: False)() else "line"


class _Discard:
    """A file that drops what is written to it."""

    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


class OneLineBar(tqdm):
    """A tqdm that draws nothing while it runs and prints one summary line when it closes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["file"] = _Discard()
        super().__init__(*args, **kwargs)

    def close(self) -> None:
        """Print the final state of the bar once (closing twice prints once)."""
        if self.disable:
            return
        line = self.format_meter(**{**self.format_dict, "ncols": None})
        super().close()
        print(line, file=sys.stderr, flush=True)


def progress_bar(iterable: Iterable | None = None, *, desc: str = "", total: float | None = None,
                 disable: bool = False, **kwargs: Any) -> tqdm:
    """A tqdm progress bar (same arguments) drawn the way `progress_mode()` says."""
    mode = "off" if disable else progress_mode()
    if mode == "widget":
        try:
            from tqdm.notebook import tqdm as widget_bar

            return widget_bar(iterable, desc=desc, total=total, **kwargs)
        except ImportError:  # no ipywidgets after all
            mode = "line"
    bar_class = OneLineBar if mode == "line" else tqdm
    return bar_class(iterable, desc=desc, total=total, disable=mode == "off", **kwargs)


@contextlib.contextmanager
def no_transformers_bars() -> Iterator[None]:
    """No transformers bars ("Loading weights", "Writing model shards") inside the block, which
    loads or saves a model the course's own bar or message already accounts for; restored after."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def quiet_library_bars() -> None:
    """In `line`/`off` mode, turn off the Hugging Face libraries' own bars (weights loading,
    downloads, dataset maps), which would otherwise fill a saved notebook."""
    if progress_mode() not in ("line", "off"):
        return
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:
        pass
    if "datasets" in sys.modules:  # importing datasets only to silence it would cost seconds
        getattr(sys.modules["datasets"], "disable_progress_bars", lambda: None)()
