"""Exact torch search (the GPU path, run here on the CPU) against faiss's flat index."""
import dataclasses

import faiss
import numpy as np
import pytest
import torch

from memdec_helpers import pipeline as P
from memdec_helpers.core import search as exact_search
from memdec_helpers.runtime import search as index_mod
from memdec_helpers.stages import index as index_stage, targets as targets_stage
from memdec_helpers.core.search import TorchFlatIndex
from memdec_helpers.runtime.search import search, search_device
from memdec_helpers.stages.index import build_index, index_identity
from memdec_helpers.stages.targets import build_targets
from test_index import clustered_keys, fake_datastore


@pytest.fixture
def small_blocks(monkeypatch):
    """Tiny blocks, so queries, key chunks and the re-rank all take several steps."""
    monkeypatch.setattr(exact_search, "SCORE_ELEMENTS", 4096)
    monkeypatch.setattr(exact_search, "QUERY_BLOCK", 37)
    monkeypatch.setattr(exact_search, "RERANK_ELEMENTS", 20_000)


def faiss_flat(keys: np.ndarray, queries: np.ndarray, k: int):
    flat = faiss.IndexFlatL2(keys.shape[1])
    flat.add(keys.astype(np.float32))
    return flat.search(queries.astype(np.float32), k)


def assert_same_search(got, want, rtol=1e-5):
    (d, i), (want_d, want_i) = got, want
    assert d.dtype == np.float32 and i.dtype == np.int64
    np.testing.assert_array_equal(np.sort(i, 1), np.sort(want_i, 1))  # same neighbours
    np.testing.assert_allclose(d, want_d, rtol=rtol, atol=rtol * np.abs(want_d).max())
    assert (np.diff(d, axis=1) >= 0).all()  # nearest first


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_exact_search_equals_faiss_flat(small_blocks, dtype):
    keys = clustered_keys(3000, 48).astype(np.float16)  # the datastore stores fp16 keys
    queries = clustered_keys(200, 48, seed=3).astype(np.float32)
    index = TorchFlatIndex(keys, "cpu", dtype)
    assert_same_search(index.search(queries, 40), faiss_flat(keys, queries, 40))


def test_fp16_scores_do_not_overflow_on_large_keys(small_blocks):
    """|q·k| of these keys is far above fp16's 65504: the query scale keeps products finite."""
    keys = (clustered_keys(2000, 32) * 60).astype(np.float16)
    queries = (clustered_keys(50, 32, seed=4) * 60).astype(np.float32)
    assert np.abs(queries @ keys.astype(np.float32).T).max() > 65504
    got = TorchFlatIndex(keys, "cpu", torch.float16).search(queries, 16)
    assert_same_search(got, faiss_flat(keys, queries, 16))


def test_search_wrapper_checks_and_k_equal_to_n(small_blocks):
    keys = clustered_keys(64, 8).astype(np.float16)
    index = TorchFlatIndex(keys, "cpu")
    queries = clustered_keys(5, 8, seed=1).astype(np.float32)
    assert_same_search(search(index, queries, 64), faiss_flat(keys, queries, 64))
    with pytest.raises(ValueError, match="index.ntotal=64"):
        search(index, queries, 65)
    with pytest.raises(ValueError, match="key size"):
        search(index, queries[:, :4], 3)


def test_keys_are_copied_once_and_released(monkeypatch):
    index = TorchFlatIndex(clustered_keys(300, 8).astype(np.float16), "cpu")
    assert index.keys is None  # nothing copied before the first search
    queries = clustered_keys(3, 8, seed=2).astype(np.float32)
    index.search(queries, 5)
    held = index.keys
    index.search(queries, 5)
    assert index.keys is held and index.nbytes == 300 * (8 * 4 + 4)
    index.release()
    assert index.keys is None


def on_torch_cpu(monkeypatch):
    """Make the builders choose exact torch search (on the CPU here, on the GPU for real)."""
    monkeypatch.setattr(index_mod, "search_device", lambda profile, n, d: torch.device("cpu"))
    monkeypatch.setattr(index_stage, "search_device", lambda profile, n, d: torch.device("cpu"))


def test_build_index_uses_the_datastore_keys_and_targets_match_faiss(monkeypatch, profile):
    store = fake_datastore(clustered_keys(1500, 16))
    profile = dataclasses.replace(profile, k=24, target_top_m=8)
    want = build_targets(profile, store, build_index(profile, store, progress=False),
                         progress=False)
    on_torch_cpu(monkeypatch)
    index = build_index(profile, store, progress=False, stage="index-torch")
    assert isinstance(index.faiss, TorchFlatIndex) and index.faiss.source is store.keys
    assert index.manifest is None and index.path is None
    assert index_identity(index) == f"exact:{store.manifest['config_hash']}"
    root = P.stage_dir(profile, "x").parent
    assert not list(root.glob("index-torch*"))  # nothing written
    got = build_targets(profile, store, index, progress=False, stage="targets-torch")
    assert got.manifest["config_hash"] == want.manifest["config_hash"]  # one search identity
    np.testing.assert_array_equal(got.ids, want.ids)
    np.testing.assert_allclose(got.probs.astype(np.float32), want.probs.astype(np.float32),
                               atol=2e-3)


def fake_cuda(monkeypatch, total_bytes: int) -> None:
    """CUDA "available" with `total_bytes` of memory, its exact search run on the CPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(index_mod, "total_device_memory", lambda device: total_bytes)
    monkeypatch.setattr(index_mod, "resolve_device", lambda device: torch.device("cpu"))


def test_search_device_auto_needs_cuda_and_room(monkeypatch, profile):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert search_device(profile, 10, 8) is None  # no CUDA: faiss on the CPU
    fake_cuda(monkeypatch, 10_000)
    assert search_device(profile, 10, 8) is not None  # 200 bytes of keys fit
    assert search_device(profile, 1000, 8) is None  # 20 kB do not fit in half of 10 kB: faiss
    assert search_device(dataclasses.replace(profile, search_device="cpu"), 10, 8) is None


def test_free_memory_flipping_between_processes_rebuilds_nothing(monkeypatch, tmp_path):
    """`auto` decided from the moment's free GPU memory: a busier GPU in the next lesson chose
    faiss, whose results had another identity, and the targets (then the decoder, DAPT and
    the kNN-LM caches) were built again. It decides from the GPU's total memory now."""
    from memdec_helpers import load_profile

    profile = load_profile("tiny", artifacts_dir=str(tmp_path / "artifacts"), device="cpu",
                           max_train_tokens=1500, max_eval_tokens=300, k=8, target_top_m=4,
                           index_type="ivf_flat", ivf_nlist=4, knn_k_grid=[8],
                           knn_temperature_grid=[3.0])
    fake_cuda(monkeypatch, 16 * 2**30)
    built = []
    real = targets_stage._write_targets
    monkeypatch.setattr(targets_stage, "_write_targets", lambda *a, **k: built.append(1) or real(*a, **k))
    for free in (15 * 2**30, 2**20):  # two lessons: an idle GPU, then an almost full one
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None, free=free: (free, 16 * 2**30))
        for memo in (P._STORES, P._EVAL_KEYS, P._KNN, P._CORPORA):
            memo.clear()
        P.release_index()
        P.targets(profile, progress=False)
        P.knn_logprobs(profile, "validation")
        assert isinstance(P.index(profile, 0, False).faiss, TorchFlatIndex)
    assert built == [1]  # the second lesson reused the first one's targets
    assert P.search_id(profile) == f"exact:{P.datastore(profile, 0, False).key}"
    P.release_index()


def test_pipeline_index_is_built_once_per_process(monkeypatch, profile):
    store = fake_datastore(clustered_keys(200, 8))
    monkeypatch.setattr(P, "datastore", lambda profile, which=0, progress=True: store)
    stages = []
    real = P.build_index
    monkeypatch.setattr(P, "build_index",
                        lambda *a, **k: stages.append(k["stage"]) or real(*a, **k))
    P.release_index()
    first = P.index(profile, 0, False)
    assert P.index(dataclasses.replace(profile, beta=0.3), 0, False) is first  # same index
    assert stages == ["index"]
    freed = []
    monkeypatch.setattr(first, "release", lambda: freed.append(1))
    P.index(profile, 1, False)  # base 1 has its own index: base 0's is freed first
    assert stages == ["index", "index-base1"] and freed == [1]
    changed = P.index(dataclasses.replace(profile, index_type="ivf_flat", ivf_nlist=4), 1, False)
    assert stages[-1] == "index-base1"
    assert changed.manifest["config"]["knobs"]["index_type"] == "ivf_flat"
    P.release_index()
