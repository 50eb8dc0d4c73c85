"""memdec_helpers: the tested helpers behind the Memory Decoder course.

The layers, from the ground up (each imports only those below it):
- `profiles` (every knob, validated) and `progress` (bars): import nothing of the package;
- `core/`: the method as pure torch/numpy — the kNN distribution, targets, loss, mixing and
  perplexity, windows, exact search, the results table. Start here;
- `runtime/`: things in memory — models, devices, the key hook, scoring, batching, search,
  kNN-LM, decoding, the training step;
- `stages/`: things on disk — the store (locks, manifests), corpus, datastore, index, targets,
  log-probs, training runs, recorded results;
- `planning/`: a run's plan (time, memory, disk) and the `auto` profile;
- `pipeline`: the notebooks' one-line calls, each stage built or reused by its manifest;
- `lessons/`: exercises and solutions, figures, the plain loss and loop; `cli/`: the batch
  runner and the torchrun entry point.
"""
from . import progress  # noqa: F401  first: imports tqdm.auto quietly before transformers/datasets do
from . import core, lessons, pipeline, planning, profiles, runtime, stages  # noqa: F401
from .planning import auto as _auto  # noqa: F401  registers the `auto` profile rule
from .core.knn import knn_distribution
from .core.loss import memdec_loss
from .core.mixing import mix_logprobs, perplexity
from .profiles import Profile, load_profile
from .runtime.decoder import build_memory_decoder
from .runtime.keys import extract_keys
from .runtime.models import load_base_model, load_tokenizer
from .runtime.scoring import token_logprobs
from .stages.corpus import load_corpus
from .stages.datastore import build_datastore, load_datastore
from .stages.records import record_results

__all__ = ["Profile", "build_datastore", "build_memory_decoder", "extract_keys", "knn_distribution",
           "load_base_model", "load_corpus", "load_datastore", "load_profile", "load_tokenizer",
           "memdec_loss", "mix_logprobs", "perplexity", "record_results", "token_logprobs"]
__version__ = "0.1.0"
