"""Per-token log-probs on disk, so that any weight sweep afterwards is instant: a model's
(`cached_token_logprobs`) and kNN-LM's for a whole (k, tau) grid (`cached_knn_logprobs`)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..core.mixing import perplexity
from ..core.windows import tokens_hash
from ..profiles import Profile
from ..runtime.models import weights_fingerprint
from ..runtime.scoring import token_logprobs
from .store import cached_array, check_stage_name, stage_dir


def cached_token_logprobs(profile: Profile, name: str, model: Any, token_ids: Any, split: str,
                          model_id: str, progress: bool = True) -> np.ndarray:
    """token_logprobs cached in `eval/<name>-<split>/`; recomputed when anything it hashes changed.

    The manifest hashes the model id and its weights, the split, the window knobs and the
    tokens, so sweeps over mixing weights reuse it, and a new corpus or a changed model
    recomputes it."""
    check_stage_name(name, "name")
    check_stage_name(split, "split")
    config = {"model_id": model_id, "weights": weights_fingerprint(model), "split": split,
              "tokens": tokens_hash(token_ids),
              **profile.subset("context_length", "stride", "dtype")}
    return cached_array(stage_dir(profile, "eval", f"{name}-{split}"), config,
                        lambda: token_logprobs(model, token_ids, profile.context_length,
                                               profile.stride, profile.batch_size,
                                               progress=progress, dtype=profile.dtype),
                        "logprobs.npy", n=len, perplexity=perplexity)
