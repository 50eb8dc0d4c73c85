"""The public API contract: every name memdec_helpers exports for the lessons and for tests
elsewhere, and bad input raising a ValueError that names the argument."""
import numpy as np
import pytest
import torch

import memdec_helpers as md

CONTRACT = ["load_profile", "load_corpus", "load_base_model", "extract_keys", "token_logprobs",
            "knn_distribution", "memdec_loss", "mix_logprobs", "perplexity"]


@pytest.mark.parametrize("name", CONTRACT)
def test_contract_names_are_exported(name):
    assert callable(getattr(md, name))


@pytest.mark.parametrize("call,argument", [
    (lambda: md.knn_distribution(torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.long), 0), "temperature"),
    (lambda: md.mix_logprobs(np.zeros(2), np.zeros(2), 2.0), "alpha"),
    (lambda: md.memdec_loss(torch.zeros(1, 1, 3), torch.zeros(1, 1, 1, dtype=torch.long),
                            torch.ones(1, 1, 1), torch.zeros(1, 1, dtype=torch.long), -0.5), "beta"),
    (lambda: md.perplexity(np.array([])), "empty"),
    (lambda: md.load_profile("no-such-profile"), "no-such-profile"),
    (lambda: md.load_profile("tiny", no_such_knob=1), "no_such_knob"),
])
def test_bad_arguments_raise_value_errors_naming_them(call, argument):
    with pytest.raises(ValueError, match=argument):
        call()
