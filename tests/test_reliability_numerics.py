"""Reliability of the numeric helpers (issue 21): non-finite model outputs refused by name,
empty batches and repeated target ids in the loss, float targets in kNN log-probs, the flat
index's missing-neighbour message, NaN arguments to generate."""
import faiss
import numpy as np
import pytest
import torch

from conftest import VOCAB, make_gpt2
from memdec_helpers.runtime.generate import generate
from memdec_helpers.runtime.search import search
from memdec_helpers.core.knn import knn_distribution, knn_token_logprobs
from memdec_helpers.core.loss import memdec_loss


# --- generate ------------------------------------------------------------------------------

def broken(model, value=float("nan")):
    """`model` with one output-norm weight set to `value`: every logit turns non-finite."""
    with torch.no_grad():
        model.transformer.ln_f.weight[0] = value
    return model


PROMPT = torch.tensor([[1, 2, 3]])


@pytest.mark.parametrize("do_sample", [False, True])
def test_generate_refuses_a_decoder_that_gives_nan(do_sample):
    """Greedy decoding returned token 0 forever with no error."""
    with pytest.raises(ValueError, match=r"memdec .*NaN.*step 0"):
        generate(make_gpt2(), broken(make_gpt2(seed=1)), PROMPT, 5, alpha=0.5,
                 do_sample=do_sample, seed=0)


def test_generate_refuses_a_base_model_that_gives_nan_and_names_it():
    with pytest.raises(ValueError, match=r"base_model .*NaN"):
        generate(broken(make_gpt2()), None, PROMPT, 3)


class Source:
    """A NextTokenSource with fixed log-probs (kNN's: -inf for tokens no neighbour holds)."""

    def __init__(self, row):
        self.row = torch.as_tensor(row, dtype=torch.float32)

    def start(self, ids):
        return self.row.expand(ids.shape[0], -1).clone()

    def step(self, ids):
        return self.start(ids[:, None])


def test_generate_accepts_minus_inf_for_some_tokens_but_not_all():
    row = torch.full((VOCAB,), -torch.inf)
    row[7] = 0.0  # one token holds all of p_kNN
    ids = generate(make_gpt2(), Source(row), PROMPT, 3, alpha=1.0)
    assert ids[0, 3:].tolist() == [7, 7, 7]
    with pytest.raises(ValueError, match=r"memdec .*-inf for every token"):
        generate(make_gpt2(), Source(torch.full((VOCAB,), -torch.inf)), PROMPT, 3, alpha=0.5)
    plus_inf = torch.zeros(VOCAB)
    plus_inf[3] = torch.inf
    with pytest.raises(ValueError, match=r"memdec .*\+inf"):
        generate(make_gpt2(), Source(plus_inf), PROMPT, 3, alpha=0.5)


@pytest.mark.parametrize("knob", ["top_k", "max_new_tokens"])
def test_generate_names_a_nan_knob(knob):
    args = {"top_k": 0, "max_new_tokens": 3, knob: float("nan")}
    with pytest.raises(ValueError, match=f"{knob}=nan must be an integer"):
        generate(make_gpt2(), None, PROMPT, args["max_new_tokens"], top_k=args["top_k"],
                 do_sample=True)


# --- memdec_loss ---------------------------------------------------------------------------

B, T, V, M = 2, 4, 13, 5


def loss_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids, probs = knn_distribution(torch.rand(B * T, 8, generator=g) * 3,
                                  torch.randint(0, V, (B * T, 8), generator=g), 1.0)
    ids, probs = ids[:, :M].view(B, T, -1), probs[:, :M].float().view(B, T, -1)
    probs = probs / probs.sum(-1, keepdim=True)
    return (torch.randn(B, T, V, generator=g), ids, probs,
            torch.randint(0, V, (B, T), generator=g))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_memdec_loss_refuses_non_finite_logits(value):
    """NaN or inf logits gave a NaN or inf loss, silently."""
    logits, ids, probs, labels = loss_inputs()
    logits[1, 2, 4] = value
    with pytest.raises(ValueError, match="logits contain NaN or inf"):
        memdec_loss(logits, ids, probs, labels, 0.5)


@pytest.mark.parametrize("shape", [(0, T), (B, 0)])
def test_memdec_loss_refuses_an_empty_batch(shape):
    """An empty batch failed deep inside a reduction."""
    logits, ids, probs, labels = loss_inputs()
    b, t = shape
    with pytest.raises(ValueError, match=r"empty.*at least one sequence and one position"):
        memdec_loss(logits[:b, :t], ids[:b, :t], probs[:b, :t], labels[:b, :t], 0.5)


def dense_kl(logits, ids, probs, labels):
    """KL(p ‖ softmax(logits)) with p summed into a dense [B, T, V] tensor, float64."""
    p = torch.zeros(B, T, V, dtype=torch.float64).scatter_add_(-1, ids, probs.double())
    log_q = torch.log_softmax(logits.double(), -1)
    terms = torch.where(p > 0, p * (p.clamp_min(1e-300).log() - log_q), torch.zeros_like(p))
    return terms.sum(-1)[labels != -100].mean()


def test_memdec_loss_matches_a_dense_reference_and_refuses_repeated_ids():
    """A target row that repeats an id gave KL 1.15 where the dense value is 2.54: the entropy
    term p log p was taken per entry, not per token. Targets must name each token once (as
    knn_distribution and the targets stage give them); a repeat is refused."""
    logits, ids, probs, labels = loss_inputs()
    _, kl, _ = memdec_loss(logits, ids, probs, labels, 0.5)
    torch.testing.assert_close(kl.double(), dense_kl(logits, ids, probs, labels), rtol=1e-5, atol=1e-6)
    repeated = ids.clone()
    repeated[0, 1, 1] = repeated[0, 1, 0]
    with pytest.raises(ValueError, match=r"target_ids repeat a token .*position \(0, 1\)"):
        memdec_loss(logits, repeated, probs, labels, 0.5)
    padded = probs.clone()  # a repeat on a padding entry (probability 0) is no repeat
    padded[0, 1, 0] += padded[0, 1, 1]
    padded[0, 1, 1] = 0.0
    _, kl, _ = memdec_loss(logits, repeated, padded, labels, 0.5)
    torch.testing.assert_close(kl.double(), dense_kl(logits, repeated, padded, labels),
                               rtol=1e-5, atol=1e-6)


# --- kNN log-probs and the flat index ------------------------------------------------------

def test_knn_token_logprobs_refuses_float_targets():
    """3.7 was truncated to token 3."""
    d = torch.rand(2, 4)
    tok = torch.tensor([[3, 1, 3, 2], [0, 1, 2, 3]])
    with pytest.raises(ValueError, match=r"targets must hold integer token ids; got float64"):
        knn_token_logprobs(d, tok, np.array([3.7, 1.0]), 1.0)
    got = knn_token_logprobs(d, tok, np.array([3, 1]), 1.0)
    w = torch.softmax(-d.double(), 1)
    np.testing.assert_allclose(got, np.log([w[0, [0, 2]].sum(), w[1, 1]]), rtol=1e-5)


def test_a_flat_index_that_misses_neighbours_does_not_blame_nprobe():
    keys = np.zeros((6, 4), dtype=np.float32)
    keys[:3] = 1e30  # their distances overflow float32: faiss returns -1 for them
    index = faiss.IndexFlatL2(4)
    index.add(keys)
    with pytest.raises(ValueError, match=r"exact \(flat\) index.*overflow.*rebuild") as caught:
        search(index, np.ones((2, 4), dtype=np.float32), 5)
    assert "raise profile.nprobe" not in str(caught.value)
