"""Shared fixtures: small random GPT-2s (fast, offline) and a tiny profile writing to tmp."""
from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from memdec_helpers.profiles import load_profile

torch.set_num_threads(1)  # tiny models: one thread is as fast and avoids oversubscription

VOCAB = 97


def make_gpt2(n_layer: int = 2, n_embd: int = 32, n_head: int = 2, vocab: int = VOCAB,
              n_positions: int = 64, seed: int = 0) -> GPT2LMHeadModel:
    """A random-init GPT-2 in eval mode (dropout off), deterministic for a seed."""
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=vocab,
                        n_positions=n_positions, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


@pytest.fixture
def gpt2() -> GPT2LMHeadModel:
    return make_gpt2()


@pytest.fixture
def token_ids() -> "torch.Tensor":
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, VOCAB, (300,), generator=g).numpy()


@pytest.fixture
def profile(tmp_path):
    """The tiny profile with artifacts under a temporary folder."""
    return load_profile("tiny", artifacts_dir=str(tmp_path / "artifacts"))
