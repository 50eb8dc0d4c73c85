"""memdec_helpers: the tested helpers behind the Memory Decoder course."""
from .corpus import load_corpus
from .models import load_base_model, load_tokenizer
from .profiles import Profile, load_profile

__version__ = "0.1.0"
