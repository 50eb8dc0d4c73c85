"""FAISS search: exact search equals numpy brute force; IVF recall; save/load; errors."""
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from memdec_helpers.core.search import recall_at_k
from memdec_helpers.runtime.search import search
from memdec_helpers.stages.index import build_index, load_index


def fake_datastore(keys, name="ds"):
    keys = keys.astype(np.float16)
    vals = np.arange(len(keys), dtype=np.int32) % 50
    return SimpleNamespace(keys=keys, vals=vals, path=None,
                           manifest={"config_hash": name, "n": len(keys), "dim": keys.shape[1]})


def clustered_keys(n, dim, seed=0, clusters=64):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim)) * 4
    return centers[rng.integers(0, clusters, n)] + rng.normal(size=(n, dim))


def brute_force(keys, queries, k):
    d = (queries ** 2).sum(1)[:, None] - 2 * queries @ keys.T + (keys ** 2).sum(1)[None, :]
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, 1), order


def test_flat_search_equals_numpy_brute_force(profile):
    store = fake_datastore(np.random.default_rng(0).normal(size=(2000, 16)))
    index = build_index(profile, store, progress=False)
    queries = np.random.default_rng(1).normal(size=(100, 16)).astype(np.float32)
    d, i = search(index, queries, 10, batch_size=33)
    want_d, want_i = brute_force(store.keys.astype(np.float64), queries.astype(np.float64), 10)
    np.testing.assert_allclose(d, want_d, rtol=1e-4, atol=1e-3)
    assert all(set(a) == set(b) for a, b in zip(i, want_i))


def test_ivf_recall_on_clustered_keys(profile):
    """IVF-flat with 64 lists and nprobe 8 keeps recall@16 >= 0.9 on clustered keys."""
    profile = replace(profile, index_type="ivf_flat", ivf_nlist=64, nprobe=8)
    store = fake_datastore(clustered_keys(20000, 64))
    index = build_index(profile, store, progress=False)
    queries = clustered_keys(300, 64, seed=5).astype(np.float32)
    _, got = search(index, queries, 16)
    _, want = brute_force(store.keys.astype(np.float64), queries.astype(np.float64), 16)
    recall = np.mean([len(set(a) & set(b)) / 16 for a, b in zip(got, want)])
    assert recall >= 0.9  # measured: 1.0 (nlist 64 = cluster count, nprobe 8)


@pytest.mark.filterwarnings("ignore:ivfpq's codebooks")
def test_ivfpq_builds_and_rejects_bad_code_size(profile):
    profile = replace(profile, index_type="ivfpq", ivf_nlist=16, pq_code_bytes=8)
    store = fake_datastore(clustered_keys(3000, 32))
    index = build_index(profile, store, progress=False)
    assert index.ntotal == 3000
    queries = clustered_keys(200, 32, seed=6).astype(np.float32)
    _, want = brute_force(store.keys.astype(np.float64), queries.astype(np.float64), 10)
    assert recall_at_k(search(index, queries, 10)[1], want) >= 0.4  # measured 0.56: 4-d per byte
    profile = replace(profile, pq_code_bytes=7)
    with pytest.raises(ValueError, match="pq_code_bytes"):
        build_index(profile, fake_datastore(clustered_keys(3000, 32), "other"), progress=False)


def test_a_small_ivfpq_training_set_is_one_warning_not_a_line_per_sub_quantizer(profile, capfd):
    """faiss printed "WARNING clustering 3999 points to 256 centroids" on the C stderr for each
    of the pq_code_bytes codebooks: past the notebook, into the terminal of a batch run."""
    profile = replace(profile, index_type="ivfpq", ivf_nlist=16, pq_code_bytes=8)
    with pytest.warns(UserWarning, match="codebooks .* trained on 3000 keys"):
        build_index(profile, fake_datastore(clustered_keys(3000, 32)), progress=False)
    assert "WARNING clustering" not in capfd.readouterr().err


def test_saved_index_round_trips_and_is_reused(profile):
    store = fake_datastore(np.random.default_rng(0).normal(size=(500, 8)))
    index = build_index(profile, store, progress=False)
    path = next(iter(__import__("pathlib").Path(profile.artifacts_dir).rglob("index.faiss")))
    loaded = load_index(path)
    q = np.random.default_rng(2).normal(size=(5, 8)).astype(np.float32)
    np.testing.assert_array_equal(search(index, q, 3)[1], search(loaded, q, 3)[1])
    mtime = path.stat().st_mtime_ns
    build_index(profile, store, progress=False)
    assert path.stat().st_mtime_ns == mtime
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="corrupted"):
        load_index(path)


def test_search_errors(profile):
    index = build_index(profile, fake_datastore(np.zeros((20, 8))), progress=False)
    with pytest.raises(ValueError, match="size 8"):
        search(index, np.zeros((2, 4), np.float32), 3)
    with pytest.raises(ValueError, match="k=50"):
        search(index, np.zeros((2, 8), np.float32), 50)
    with pytest.raises(ValueError, match="NaN"):
        search(index, np.full((2, 8), np.nan, np.float32), 3)


def test_keys_added_in_chunks_give_the_same_index(profile, monkeypatch):
    import memdec_helpers.runtime.search as index_module

    store = fake_datastore(np.random.default_rng(0).normal(size=(1000, 8)))
    monkeypatch.setattr(index_module, "ADD_CHUNK", 128)  # 8 float32 chunks, never all at once
    index = build_index(profile, store, progress=False)
    assert index.ntotal == 1000
    q = np.random.default_rng(3).normal(size=(20, 8)).astype(np.float32)
    _, want = brute_force(store.keys.astype(np.float64), q.astype(np.float64), 5)
    assert all(set(a) == set(b) for a, b in zip(search(index, q, 5)[1], want))


def test_small_datastore_clamps_nlist_and_says_so(profile):
    from memdec_helpers.stages.index import index_identity

    profile = replace(profile, index_type="ivf_flat", ivf_nlist=256, nprobe=4)
    store = fake_datastore(clustered_keys(1000, 16))
    with pytest.warns(UserWarning, match="nlist=25"):  # 1000 keys // 39 per list
        index = build_index(profile, store, progress=False)
    import faiss

    assert faiss.extract_index_ivf(index.faiss).nlist == 25
    identity = index_identity(index)  # "<index recipe key>:nprobe=4", the key from its manifest
    assert identity == f"{index.manifest['config_hash']}:nprobe=4"


def test_index_identity_changes_with_the_index_knobs(profile):
    from memdec_helpers.stages.index import index_identity

    profile = replace(profile, index_type="ivf_flat", ivf_nlist=8)
    store = fake_datastore(clustered_keys(2000, 16))
    first = index_identity(build_index(profile, store, progress=False))
    profile = replace(profile, ivf_nlist=16)
    assert index_identity(build_index(profile, store, progress=False)) != first


def test_exact_search_has_one_identity_whatever_the_index_type(profile):
    """Flat faiss (built or read back) and exact torch search give the same neighbours: one
    identity, "exact over the datastore", so targets built with either are one stage."""
    from memdec_helpers.core.search import TorchFlatIndex
    from memdec_helpers.stages.index import Index, index_identity

    store = fake_datastore(clustered_keys(500, 8))
    flat = index_identity(build_index(profile, store, progress=False))
    torch_exact = Index(TorchFlatIndex(store.keys, "cpu", identity="ds"), None, None, "ds")
    assert flat == index_identity(torch_exact) == "exact:ds"
    approx = replace(profile, index_type="ivf_flat", ivf_nlist=4)
    assert index_identity(build_index(approx, store, progress=False)) != flat


def test_index_identity_is_the_same_built_or_loaded(profile):
    """A fresh flat index is an IndexFlat, the same one read back an IndexFlatL2: targets built
    in the process that built the index were rebuilt by every later process."""
    from memdec_helpers.stages.index import index_identity

    store = fake_datastore(clustered_keys(500, 8))
    built = index_identity(build_index(profile, store, progress=False))
    assert index_identity(build_index(profile, store, progress=False)) == built  # read back


def test_too_few_probes_search_more_lists_not_minus_one(profile):
    """A query whose nprobe lists hold fewer than k keys (colab's k 1024 and nprobe 32 on a
    datastore of 4,000 keys) got -1 neighbours, then an error: it is searched again with more
    lists; the other queries keep nprobe, and the index keeps its nprobe."""
    import faiss

    profile = replace(profile, index_type="ivf_flat", ivf_nlist=20, nprobe=1)
    store = fake_datastore(clustered_keys(1000, 16, clusters=20))
    index = build_index(profile, store, progress=False)
    queries = store.keys[:50].astype(np.float32)
    d, got = search(index, queries, 200)  # one list holds ~50 keys
    assert (got >= 0).all()
    want_d, _ = brute_force(store.keys.astype(np.float64), queries.astype(np.float64), 200)
    np.testing.assert_allclose(d[:, :20], want_d[:, :20], rtol=1e-4, atol=1e-3)
    assert faiss.extract_index_ivf(index.faiss).nprobe == 1
    _, few = search(index, queries, 5)  # found in one list: the profile's nprobe only
    assert (few == search(index, queries, 5)[1]).all()


def test_ivfpq_needs_enough_training_keys(profile, tmp_path):
    profile = replace(profile, index_type="ivfpq", ivf_nlist=4, pq_code_bytes=8)
    with pytest.raises(ValueError, match="training keys"):
        build_index(profile, fake_datastore(clustered_keys(200, 32)), progress=False)
    assert not any((tmp_path / "artifacts").rglob("index.faiss"))  # refused before any write


def test_load_index_without_a_file(tmp_path):
    with pytest.raises(ValueError, match="build it first"):
        load_index(tmp_path)


def test_stage_argument(profile, tmp_path):
    from pathlib import Path

    store = fake_datastore(np.random.default_rng(0).normal(size=(100, 8)))
    index = build_index(profile, store, progress=False, stage="index-exact")
    assert index.path.parent.parent == Path(profile.artifacts_dir) / profile.name
    assert index.path.parent.name.startswith("index-exact-") and index.path.is_file()
    with pytest.raises(ValueError, match="stage"):
        build_index(profile, store, progress=False, stage="../elsewhere")


def test_recall_at_k_counts_shared_neighbours():
    got = recall_at_k(np.array([[1, 2, 3], [7, 8, 9]]), np.array([[3, 4, 5], [9, 8, 7]]))
    assert got == pytest.approx((1 / 3 + 1) / 2)
