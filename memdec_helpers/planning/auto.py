"""`PROFILE = "auto"`: tiny without CUDA; with CUDA the first of colab (in Colab) or gpu
(elsewhere), then colab, whose plan fits this machine, else cpu. Registered with `profiles`
on import, so that `load_profile("auto")` follows this rule while `profiles` imports nothing
of the package."""
from __future__ import annotations

import os

from .. import profiles
from ..profiles import load_profile
from .plan import misfits


def in_colab() -> bool:
    return "COLAB_RELEASE_TAG" in os.environ or "COLAB_GPU" in os.environ


def auto_choice() -> tuple[str, list[str]]:
    """(the profile `auto` picks, one line per profile it passed over and why)."""
    import torch

    if not torch.cuda.is_available():
        return "tiny", []
    notes = []
    for name in dict.fromkeys(("colab" if in_colab() else "gpu", "colab")):
        problems = misfits(load_profile(name))
        if not problems:
            return name, notes
        notes.append(f"auto: not {name!r}: " + "; ".join(problems))
    return "cpu", notes


profiles.register_auto_choice(auto_choice)
