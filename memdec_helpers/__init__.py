"""memdec_helpers: the tested helpers behind the Memory Decoder course.

One module per stage: corpus (read by `sources`), models, datastore, index, knn, targets, memdec, train, evaluate,
generate, plots, profiles, run; `pipeline` chains them with on-disk caching for the notebooks.
For the learner: `exercises` (checks; solutions apart in `solutions`), `plain_training` (the
loss and loop lesson 03 shows), `progress` (bars), `publish` (repository URL, setup cell).
"""
from . import progress  # first: imports tqdm.auto quietly before transformers/datasets do
from . import (artifacts, corpus, datastore, evaluate, exercises, generate, index, knn, knnlm,
               memdec, models, notebook, pipeline, plain_training, plots, profiles, publish,
               sources, targets, train, windows)
from .corpus import load_corpus
from .datastore import build_datastore, extract_keys, load_datastore
from .evaluate import mix_logprobs, perplexity, token_logprobs
from .knn import knn_distribution
from .memdec import build_memory_decoder, memdec_loss
from .models import load_base_model, load_tokenizer
from .profiles import Profile, load_profile
from .artifacts import record_results

__all__ = ["Profile", "build_datastore", "build_memory_decoder", "extract_keys", "knn_distribution",
           "load_base_model", "load_corpus", "load_datastore", "load_profile", "load_tokenizer",
           "memdec_loss", "mix_logprobs", "perplexity", "record_results", "token_logprobs"]
__version__ = "0.1.0"
