"""The teacher knob (which base model's datastore makes the kNN targets) and the main table's
training seeds (rows averaged over one run per seed)."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from memdec_helpers import load_profile
from memdec_helpers import pipeline as P
from memdec_helpers.core.knn import knn_distribution
from memdec_helpers.core.results import find, plain_row
from memdec_helpers.core.targets import drop_self
from memdec_helpers.runtime.search import search
from memdec_helpers.stages.recipes import datastore_recipe


@pytest.fixture(autouse=True)
def fresh_memos(monkeypatch):
    """The pipeline memoises by recipe key, not by artifacts folder: each test gets empty memos
    (a new session), so nothing it builds leaks into another test's temporary folder."""
    for memo in ("_STORES", "_EVAL_KEYS", "_KNN", "_CORPORA", "_MEMDEC"):
        monkeypatch.setattr(P, memo, {})
    yield
    P.release_index()


@pytest.fixture
def small(tmp_path):
    return load_profile("tiny", artifacts_dir=str(tmp_path / "artifacts"), max_train_tokens=3000,
                        max_eval_tokens=600, k=8, target_top_m=4, knn_k_grid=[4, 8],
                        knn_temperature_grid=[1.0, 3.0], neighbour_cache_k=None,
                        train_steps=2, warmup_steps=1, eval_every=2, train_batch_size=4,
                        ablation_workers=1)


def test_the_default_teacher_keeps_every_key_and_base_1_changes_only_the_targets_upstream(small):
    default = P._targets_recipe(small)
    assert P._targets_recipe(dataclasses.replace(small, target_base=0)).key == default.key
    teacher = dataclasses.replace(small, target_base=1)
    other = P._targets_recipe(teacher)
    assert other.knobs == default.knobs and other.key != default.key
    assert other.upstream["datastore"] == datastore_recipe(small, 1).key
    assert default.upstream["datastore"] == datastore_recipe(small, 0).key
    assert other.folder.startswith("targets-k8-tau3-m4-base1-")
    assert default.folder.startswith("targets-k8-tau3-m4-") and "base1" not in default.folder
    assert P._run_recipe(teacher, "memdec").key != P._run_recipe(small, "memdec").key
    dapt = P.dapt_profile(small)  # β = 0: no targets, so the teacher does not matter
    assert P._run_recipe(dataclasses.replace(dapt, target_base=1), "dapt").key == \
        P._run_recipe(dapt, "dapt").key
    with pytest.raises(ValueError, match="target_base"):
        dataclasses.replace(small, target_base=2)


def _expected_targets(profile, which: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 token and its probability of every training position, from base `which`'s keys,
    searched here (k + 1, own row dropped) and weighted with the profile's τ."""
    store, index = P.datastore(profile, which), P.index(profile, which)
    d, rows = search(index, np.asarray(store.keys), profile.k + 1)
    d, rows = drop_self(d, rows, np.arange(len(store.vals)))
    ids, probs = knn_distribution(torch.from_numpy(d), torch.from_numpy(store.vals[rows].astype(np.int64)),
                                  profile.knn_temperature)
    return ids[:, 0].numpy(), probs[:, 0].numpy()


def test_targets_of_base_1_come_from_its_own_datastore(small):
    teacher = dataclasses.replace(small, target_base=1)
    got, default = P.targets(teacher, progress=False), P.targets(small, progress=False)
    assert got.ids.shape == default.ids.shape == (2999, 4)
    ids1, p1 = _expected_targets(small, 1, 4)
    top = np.asarray(got.probs, dtype=np.float32).argmax(1)
    top_ids = np.asarray(got.ids)[np.arange(len(top)), top]
    clear = p1 > 0.6  # a clear winner: no tie to break differently
    assert clear.sum() > 100
    assert np.array_equal(top_ids[clear], ids1[clear])
    assert not np.array_equal(np.asarray(got.ids), np.asarray(default.ids))
    val = P.validation_targets(teacher)
    keys1, _ = P.eval_keys(small, "validation", 1)
    assert val.ids.shape[0] == len(keys1) and "base1" in val.path.name
    P.release_index()


def test_main_table_rows_average_one_run_per_seed(small):
    profile = dataclasses.replace(small, main_seeds=2)
    rows = P.results(profile)
    assert P.main_seeds(profile) == (0, 1)
    mixed = [P.decoder_result(P.with_seed(profile, s), general=True)[1] for s in (0, 1)]
    dapt = [plain_row("DAPT", P._splits(lambda split, text, s=s: P.dapt_logprobs(
        P.with_seed(profile, s), split, text)), 0) for s in (0, 1)]
    for row, runs in ((find(rows, "base + MemDec", 0), mixed), (find(rows, "DAPT", 0), dapt)):
        tests = [r["test_ppl"] for r in runs]
        assert tests[0] != tests[1]  # two different runs, not one run twice
        assert row["seeds"] == [0, 1]
        assert [s["test_ppl"] for s in row["per_seed"]] == pytest.approx(tests, rel=1e-12)
        assert row["test_ppl"] == pytest.approx(sum(tests) / 2, rel=1e-12)
        assert row["test_ppl_std"] == pytest.approx(abs(tests[0] - tests[1]) / math.sqrt(2), rel=1e-9)
    single = P.results(dataclasses.replace(small, main_seeds=1))  # seed 0's numbers, no spread
    assert find(single, "base + MemDec", 0)["test_ppl"] == mixed[0]["test_ppl"]
    assert find(single, "base + MemDec", 0)["test_ppl_std"] is None
    P.release_index()


def test_same_size_decoder_is_dapt_with_the_kl_term(small):
    same, dapt = P.same_size_profile(small), P.dapt_profile(small)
    a, b = P._run_recipe(same, "memdec"), P._run_recipe(dapt, "dapt")
    assert a.upstream["init"] == b.upstream["init"]  # all of base 0, the same start
    assert {k: v for k, v in a.knobs.items() if k != "beta"} == \
        {k: v for k, v in b.knobs.items() if k != "beta"}  # DAPT's exact schedule
    assert (a.knobs["beta"], b.knobs["beta"]) == (small.beta, 0.0) and "targets" in a.upstream


def test_dapt_init_starts_from_the_trained_dapt_model(small):
    start = P.dapt_init_profile(small)
    dapt_model, _ = P.dapt(small, progress=False)
    assert start.memdec_layers is None and start.memdec_init.endswith("model")
    from memdec_helpers.runtime.decoder import build_memory_decoder
    built = build_memory_decoder(start, base_model=P.base(small, 0)[0])
    got, want = built.state_dict(), dapt_model.state_dict()
    assert all(torch.equal(got[k].float().cpu(), want[k].float().cpu()) for k in want)
    assert P._run_recipe(start, "memdec").upstream["init"] != \
        P._run_recipe(P.same_size_profile(small), "memdec").upstream["init"]


def test_main_runs_trains_only_the_kinds_asked_for(small, monkeypatch):
    profile = dataclasses.replace(small, main_seeds=3)
    calls = []
    monkeypatch.setattr(P, "_main_run_job", lambda p, kind, validate: calls.append((p.seed, kind, validate)))
    P.main_runs(profile, workers=1, kinds=("memdec",))
    assert calls == [(0, "memdec", True), (1, "memdec", False), (2, "memdec", False)]
    with pytest.raises(ValueError, match="kinds"):
        P.main_runs(profile, kinds=("lora",))


def test_full_length_comparison_trains_lesson_06s_runs_once(small):
    rows = P.full_length_comparison(small)
    assert set(rows) == {"main", "same size", "taught by base 1", "DAPT"}
    assert set(rows["main"]) == {"alone", "base 0", "base 1"} and set(rows["DAPT"]) == {"alone", "base 0"}
    tests = {name: r["alone"]["test_ppl"] for name, r in rows.items()}
    assert len(set(tests.values())) == 4  # four different models, none scored twice
    for name, variant in (("same size", P.same_size_profile(small)),
                          ("taught by base 1", P.teacher_profile(small))):
        assert P._main_run_done(variant, "memdec"), name  # trained under its own recipe
        assert rows[name]["base 1"]["weight"] in small.alpha_grid
    assert P.full_length_comparison(dataclasses.replace(small, full_length_ablations=False)) == {}
    P.release_index()
