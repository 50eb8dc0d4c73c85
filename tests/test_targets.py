"""Training targets: self-exclusion by position, equality with a brute-force reference, resume."""
from collections import defaultdict
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from memdec_helpers.stages import targets as targets_module
from memdec_helpers.stages.index import build_index
from memdec_helpers.stages.targets import build_eval_targets, build_targets, mean_retained_mass


def datastore(keys, vals, name="ds"):
    return SimpleNamespace(keys=keys.astype(np.float16), vals=vals.astype(np.int32), path=None,
                           manifest={"config_hash": name, "n": len(keys), "dim": keys.shape[1]})


def brute_force_row(keys, vals, i, k, temperature, m):
    """p_kNN for query i without its own position, top-m renormalized, as a dict."""
    d = ((keys - keys[i]) ** 2).sum(1)
    d[i] = np.inf
    order = np.argsort(d, kind="stable")[:k]
    w = np.exp(-(d[order] - d[order].min()) / temperature)
    p = defaultdict(float)
    for wi, ti in zip(w / w.sum(), vals[order]):
        p[int(ti)] += wi
    top = sorted(p.items(), key=lambda kv: -kv[1])[:m]
    mass = sum(v for _, v in top)
    return {t: v / mass for t, v in top}, mass


@pytest.fixture
def small(profile):
    profile = replace(profile, k=8, target_top_m=4, knn_temperature=2.0)
    rng = np.random.default_rng(0)
    keys = rng.normal(size=(300, 8)).astype(np.float16).astype(np.float64)
    vals = rng.integers(0, 12, 300)
    return profile, keys, vals


def test_targets_equal_brute_force(small):
    profile, keys, vals = small
    store = datastore(keys, vals)
    t = build_targets(profile, store, build_index(profile, store, progress=False), progress=False)
    assert t.ids.shape == (300, 4) and t.ids.dtype == np.int32 and t.probs.dtype == np.float16
    for i in range(300):
        want, mass = brute_force_row(keys, vals, i, 8, 2.0, 4)
        got = {int(a): float(b) for a, b in zip(t.ids[i], t.probs[i]) if b > 0}
        assert got.keys() <= want.keys()
        for tok, p in want.items():
            assert got.get(tok, 0.0) == pytest.approx(p, abs=2e-3)
        assert float(t.mass[i]) == pytest.approx(mass, abs=2e-3)
    np.testing.assert_allclose(t.probs.astype(np.float64).sum(1), 1.0, atol=3e-3)
    assert 0 < mean_retained_mass(t) <= 1


def test_self_is_excluded_by_position_not_by_rank(profile):
    """Query 1 has an exact duplicate at row 0, so row 0 may come back first: dropping 'the first
    hit' would remove row 0 and keep the query itself; dropping by position removes row 1."""
    profile = replace(profile, k=2, target_top_m=2, knn_temperature=1.0)
    keys = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 0.0], [9.0, 9.0]])
    vals = np.array([7, 3, 5, 6])
    store = datastore(keys, vals)
    index = build_index(profile, store, progress=False)
    from memdec_helpers.runtime.search import search

    assert search(index, keys[1:2].astype(np.float32), 3)[1][0, 0] == 0  # the premise: 0 first
    t = build_targets(profile, store, index, progress=False)
    row = dict(zip(t.ids[1].tolist(), t.probs[1].astype(float).tolist()))
    assert row.get(3, 0.0) == 0.0  # its own next token is not a target ...
    assert row[7] > 0.99  # ... the duplicate's is
    row0 = dict(zip(t.ids[0].tolist(), t.probs[0].astype(float).tolist()))
    assert row0[3] > 0.99 and row0.get(7, 0.0) == 0.0


def test_rebuild_on_config_change(small):
    profile, keys, vals = small
    store = datastore(keys, vals)
    index = build_index(profile, store, progress=False)
    first = np.array(build_targets(profile, store, index, progress=False).probs)
    profile = replace(profile, knn_temperature=50.0)
    second = build_targets(profile, store, index, progress=False)
    assert second.manifest["config"]["knobs"]["knn_temperature"] == 50.0
    assert not np.array_equal(first, np.asarray(second.probs))


def test_interrupted_build_resumes_to_identical_files(small, monkeypatch, tmp_path):
    profile, keys, vals = small
    keys = np.random.default_rng(3).normal(size=(2500, 8))
    vals = np.random.default_rng(4).integers(0, 30, 2500)
    store = datastore(keys, vals)
    monkeypatch.setattr(targets_module, "CHUNK", 512)
    index = build_index(profile, store, progress=False)
    clean = build_targets(profile, store, index, progress=False)
    clean_bytes = [(clean.path / f).read_bytes() for f in ("ids.i32", "probs.f16", "mass.f16")]
    profile = replace(profile, artifacts_dir=str(tmp_path / "second"))
    real, calls = targets_module.search, {"n": 0}

    def dying_search(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(targets_module, "search", dying_search)
    with pytest.raises(KeyboardInterrupt):
        build_targets(profile, store, index, progress=False)
    calls["n"] = 10  # from now on never die; count the chunks the rerun still needs
    resumed = build_targets(profile, store, index, progress=False)
    assert calls["n"] == 10 + 3  # chunks 3, 4, 5 of 5 only: the first two were kept
    assert [(resumed.path / f).read_bytes() for f in ("ids.i32", "probs.f16", "mass.f16")] == clean_bytes


def test_k_larger_than_datastore_is_refused(small):
    profile, keys, vals = small
    store = datastore(keys[:5], vals[:5])
    with pytest.raises(ValueError, match="k=8"):
        build_targets(profile, store, build_index(profile, store, progress=False), progress=False)


def test_eval_targets_keep_every_neighbour(small):
    profile, keys, vals = small
    store = datastore(keys, vals)
    index = build_index(profile, store, progress=False)
    t = build_eval_targets(profile, index, store, keys[:10].astype(np.float32), name="val")
    row = dict(zip(t.ids[0].tolist(), t.probs[0].astype(float).tolist()))
    assert row[int(vals[0])] > 0  # the query's own entry is a legitimate neighbour here


def test_targets_follow_the_index_and_refuse_a_foreign_one(small):
    profile, keys, vals = small
    profile = replace(profile, index_type="ivf_flat", ivf_nlist=4, nprobe=4)
    store = datastore(keys, vals)
    first = build_targets(profile, store, build_index(profile, store, progress=False),
                          progress=False)
    profile = replace(profile, ivf_nlist=2)  # another index: other neighbours, other targets
    second = build_targets(profile, store, build_index(profile, store, progress=False),
                           progress=False)
    assert second.manifest["config_hash"] != first.manifest["config_hash"]
    other = datastore(keys[:100], vals[:100], "other")
    with pytest.raises(ValueError, match="does not belong"):
        build_targets(profile, store, build_index(profile, other, progress=False), progress=False)


def test_drop_self_removes_the_own_position_or_else_the_farthest():
    from memdec_helpers.core.targets import drop_self

    distances = np.array([[0.0, 0.0, 1.0, 2.0], [0.0, 0.0, 0.0, 0.0], [0.0, 3.0, 4.0, 5.0]])
    indices = np.array([[4, 7, 2, 9], [1, 2, 3, 4], [5, 6, 8, 9]])
    d, i = drop_self(distances, indices, np.array([7, 9, 5]))
    assert i.tolist() == [[4, 2, 9], [1, 2, 3], [6, 8, 9]]  # self anywhere, absent, first
    assert d.tolist() == [[0.0, 1.0, 2.0], [0.0, 0.0, 0.0], [3.0, 4.0, 5.0]]


def test_rows_sum_to_one_mass_in_range_and_padding_is_zero(profile):
    """Only 3 distinct next tokens but m = 6: every row is padded with prob exactly 0."""
    profile = replace(profile, k=10, target_top_m=6, knn_temperature=5.0)
    rng = np.random.default_rng(7)
    keys, vals = rng.normal(size=(200, 4)), rng.integers(0, 3, 200)
    store = datastore(keys, vals)
    t = build_targets(profile, store, build_index(profile, store, progress=False), progress=False)
    probs = np.asarray(t.probs, dtype=np.float64)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=3e-3)
    assert (probs[:, 3:] == 0).all() and (probs[:, :1] > 0).all()
    assert all(len(set(row)) == 6 for row in t.ids.tolist())  # padding ids are unique too
    mass = np.asarray(t.mass, dtype=np.float64)
    assert (mass > 0).all() and (mass <= 1).all() and mass.min() == 1.0  # 3 tokens <= m: all kept
    assert t.manifest["mean_retained_mass"] == pytest.approx(1.0)


def test_mass_reports_what_top_m_drops(small):
    profile, keys, vals = small
    profile = replace(profile, target_top_m=1)
    store = datastore(keys, vals)
    t = build_targets(profile, store, build_index(profile, store, progress=False), progress=False)
    for i in range(0, 300, 37):
        _, want = brute_force_row(keys, vals, i, 8, 2.0, 1)
        assert float(t.mass[i]) == pytest.approx(want, abs=2e-3)
    assert 0 < mean_retained_mass(t) < 1 and (np.asarray(t.probs) == 1).all()


def test_eval_targets_accept_a_vals_array_and_equal_brute_force(small):
    profile, keys, vals = small
    store = datastore(keys, vals)
    index = build_index(profile, store, progress=False)
    queries = np.random.default_rng(9).normal(size=(20, 8)).astype(np.float32)
    t = build_eval_targets(profile, index, store.vals, queries, name="val")
    stored = keys.astype(np.float16).astype(np.float64)
    for q in range(20):
        d = ((stored - queries[q].astype(np.float64)) ** 2).sum(1)
        order = np.argsort(d, kind="stable")[:8]
        w = np.exp(-(d[order] - d[order].min()) / 2.0)
        p = defaultdict(float)
        for wi, ti in zip(w / w.sum(), vals[order]):
            p[int(ti)] += wi
        top = dict(sorted(p.items(), key=lambda kv: -kv[1])[:4])
        mass = sum(top.values())
        got = {int(a): float(b) for a, b in zip(t.ids[q], t.probs[q]) if b > 0}
        assert got.keys() == top.keys()
        for tok, v in top.items():
            assert got[tok] == pytest.approx(v / mass, abs=2e-3)
    assert t.path.name.startswith("targets-val-")


def test_bad_arguments_are_refused_before_any_file_is_written(small, tmp_path):
    profile, keys, vals = small
    store = datastore(keys, vals)
    index = build_index(profile, store, progress=False)
    with pytest.raises(ValueError, match="name"):
        build_eval_targets(profile, index, store, keys[:3].astype(np.float32), name="../x")
    with pytest.raises(ValueError, match="does not belong"):
        build_eval_targets(profile, index, store, np.zeros((3, 5), np.float32), name="val")
    assert not [p for p in (tmp_path / "artifacts").rglob("*") if "targets" in str(p)]


@pytest.mark.parametrize("k, temperature", [(8, 2.0), (3, 0.5)])
def test_targets_from_cached_neighbours_equal_brute_force(small, k, temperature):
    """One search for 20 neighbours serves the targets of any smaller k and any τ."""
    from memdec_helpers.stages.targets import build_neighbours

    profile, keys, vals = small
    profile = replace(profile, k=k, knn_temperature=temperature, target_top_m=min(4, k))
    store = datastore(keys, vals)
    index = build_index(profile, store, progress=False)
    cache = build_neighbours(profile, store, index, 20, progress=False)
    assert cache.rows.shape == (300, 20) and (cache.rows[:, 0] == np.arange(300)).mean() > 0.95
    t = build_targets(profile, store, index, progress=False, stage=f"t{k}", neighbours=cache)
    for i in range(300):
        want, _ = brute_force_row(keys, vals, i, k, temperature, min(4, k))
        got = {int(a): float(b) for a, b in zip(t.ids[i], t.probs[i]) if b > 0}
        for tok, p in want.items():
            assert got.get(tok, 0.0) == pytest.approx(p, abs=2e-3)
    with pytest.raises(ValueError, match="cached neighbours"):
        build_targets(replace(profile, k=20), store, index, progress=False, stage="t20",
                      neighbours=cache)
