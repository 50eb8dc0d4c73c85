"""Base models: the tiny ones load offline and work; hub profiles fail early and clearly offline."""
import socket

import numpy as np
import pytest
import torch

from memdec_helpers import load_base_model, load_corpus, load_profile
from memdec_helpers.runtime.hub import HubUnavailableError
from memdec_helpers.runtime.models import count_parameters, model_id, weights_fingerprint


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network is unreachable (simulated)")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


@pytest.mark.parametrize("which", [0, 1])
def test_tiny_models_load_offline_with_finite_logits(which, no_network):
    profile = load_profile("tiny")
    model, tokenizer = load_base_model(profile, which)
    assert not model.training
    assert model.config.vocab_size == len(tokenizer)
    ids = torch.tensor([tokenizer("And God said, Let there be light")["input_ids"]])
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()
    assert model_id(model).startswith(profile.base_models[which] + "@")


def test_tiny_models_share_the_tokenizer_and_differ_in_size():
    profile = load_profile("tiny")
    (small, tok0), (medium, tok1) = load_base_model(profile, 0), load_base_model(profile, 1)
    assert tok0.get_vocab() == tok1.get_vocab()
    assert count_parameters(medium) > 1.5 * count_parameters(small)


def test_which_out_of_range_is_named():
    with pytest.raises(ValueError, match="which=5"):
        load_base_model(load_profile("tiny"), 5)


def test_hub_model_offline_gives_one_clear_error(no_network):
    profile = load_profile("cpu", base_models=["memdec-course/not-in-any-cache"],
                           memdec_init="base:0")
    with pytest.raises(HubUnavailableError, match="tiny"):
        load_base_model(profile)


def test_hub_dataset_offline_gives_one_clear_error(no_network, tmp_path):
    profile = load_profile("cpu", artifacts_dir=str(tmp_path),
                           domain_corpus="hub:memdec-course/not-a-dataset")
    with pytest.raises(ValueError, match="tiny"):
        load_corpus(profile)
    assert not any(tmp_path.rglob("*.npy"))  # nothing written before failing


def test_cuda_asked_for_but_absent(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA"):
        load_base_model(load_profile("tiny", device="cuda"))


def test_larger_base_model_is_better_on_general_and_domain_text(tmp_path):
    """The shipped bases behave like GPT-2 small vs larger: the larger one wins on both texts."""
    profile = load_profile("tiny", artifacts_dir=str(tmp_path))
    texts = {"general": load_corpus(profile, which="general")["test"][:4096],
             "domain": load_corpus(profile)["test"][:4096]}

    def mean_nll(model, tokens: np.ndarray) -> float:
        ids = torch.from_numpy(tokens.astype(np.int64)).view(-1, 128)
        with torch.no_grad():
            return model(ids, labels=ids).loss.item()

    small, large = load_base_model(profile, 0)[0], load_base_model(profile, 1)[0]
    for name, tokens in texts.items():
        assert mean_nll(large, tokens) < mean_nll(small, tokens) - 0.05, name


def test_model_id_names_the_revision_and_the_weights():
    """A new base_model_revision used to reuse every cache made with the old one."""
    plain, _ = load_base_model(load_profile("tiny"), 0)
    pinned, _ = load_base_model(load_profile("tiny", base_model_revision="v2"), 0)
    name = load_profile("tiny").base_models[0]
    assert model_id(pinned).startswith(name + "@v2@") and "@v2" not in model_id(plain)
    assert model_id(pinned).rsplit("@", 1)[1] == model_id(plain).rsplit("@", 1)[1]  # same weights
    with torch.no_grad():
        next(plain.parameters()).add_(1.0)
    assert weights_fingerprint(plain) != weights_fingerprint(pinned)
