"""Per-token log-probs on disk, so that any weight sweep afterwards is instant: a model's, or
kNN-LM's for a whole (k, tau) grid, each in `eval/<label>-<key>/` under its recipe."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..core.mixing import perplexity
from ..core.windows import WindowSpec, tokens_hash
from ..profiles import Profile
from ..runtime.models import weights_fingerprint
from ..runtime.scoring import score_tokens
from .recipes import Recipe, window_knobs
from .store import cached_array, check_stage_name, stage_dir


def saved_logprobs(profile: Profile, recipe: Recipe, compute: Callable[[], np.ndarray],
                   **info: Any) -> np.ndarray:
    """`compute()` (log-probs, any shape) saved under the recipe and reused while it holds;
    `compute` runs only when the saved array is missing or stale (no model is loaded else)."""
    return cached_array(stage_dir(profile, "eval", recipe.folder), recipe.config(), compute,
                        "logprobs.npy", shape=lambda values: list(values.shape), **info)


def cached_token_logprobs(profile: Profile, name: str, model: Any, token_ids: Any, split: str,
                          model_id: str, progress: bool = True) -> np.ndarray:
    """score_tokens of an in-memory model, cached under a recipe of the model's id and weights,
    the split's tokens and the window knobs: a new corpus or a changed model recomputes it."""
    check_stage_name(name, "name")
    check_stage_name(split, "split")
    recipe = Recipe("logprobs", f"{name}-{split}", {"split": split, **window_knobs(profile)},
                    {"model": f"{model_id}@{weights_fingerprint(model)}",
                     "tokens": tokens_hash(token_ids)})
    return saved_logprobs(profile, recipe,
                          lambda: score_tokens(model, token_ids, WindowSpec.of(profile),
                                               progress=progress),
                          n=len, perplexity=perplexity)
