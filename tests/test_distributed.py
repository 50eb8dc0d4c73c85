"""Data-parallel training: 2 CPU processes (gloo, DDP) give the single-process result."""
import dataclasses
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from memdec_helpers.runtime.distributed import check_batch_split, world
from memdec_helpers.stages.training import train_memory_decoder
from test_budget import no_dropout_gpt2
from test_train import L, fake_targets

TOLERANCE = dict(rtol=1e-4, atol=1e-5)  # float32 sums in another order over 4 Adam steps


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(profile, tokens, out_dir):
    model, history = train_memory_decoder(profile, no_dropout_gpt2(), tokens, fake_targets(tokens),
                                          out_dir=out_dir, progress=False)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, history


def worker(rank, port, profile, tokens, out_dir, result_path):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    torch.set_num_threads(1)
    try:
        state, history = train(profile, tokens, out_dir)
        if rank == 0:
            torch.save({"state": state, "steps": history["steps"]}, result_path)
    finally:
        dist.destroy_process_group()


@pytest.fixture
def setup(profile, token_ids):
    profile = dataclasses.replace(profile, context_length=L, stride=8, batch_size=8,
                                  train_batch_size=4, grad_accum=2, train_steps=4, eval_every=4,
                                  memdec_init="scratch", warmup_steps=1,
                                  micro_batch_size=1)  # per process: 2 passes of 1 sequence
    return profile, token_ids


@pytest.mark.slow
def test_two_processes_match_one(setup, tmp_path):
    profile, tokens = setup
    mp.spawn(worker, args=(free_port(), profile, tokens, tmp_path / "ddp", tmp_path / "ddp.pt"),
             nprocs=2, join=True)
    got = torch.load(tmp_path / "ddp.pt")
    single = dataclasses.replace(profile, micro_batch_size=None)
    want_state, want_history = train(single, tokens, tmp_path / "single")
    for key in ("loss", "kl", "ce", "grad_norm"):  # grad_norm: Adam alone would hide a scale error
        np.testing.assert_allclose([s[key] for s in got["steps"]],
                                   [s[key] for s in want_history["steps"]], rtol=1e-5)
    for name, tensor in want_state.items():
        torch.testing.assert_close(got["state"][name], tensor, **TOLERANCE)
    assert (tmp_path / "ddp" / "manifest.json").exists()  # rank 0 wrote the finished run


def test_batch_must_split_evenly(monkeypatch):
    monkeypatch.setattr("memdec_helpers.runtime.distributed.world", lambda: (0, 3))
    with pytest.raises(ValueError, match="train_batch_size=4 must be a multiple of the 3"):
        check_batch_split(4)
    assert world() == (0, 1)  # the real world here: one process
