"""Lesson 06's variants come from the profile: tiny's are the values its prose was written from,
every shipped profile gets variants that fit its own k, τ, caps and neighbour cache."""
import pytest

from memdec_helpers.planning.lesson_settings import ablation_settings, k_grid
from memdec_helpers.profiles import PROFILE_NAMES, load_profile


def test_tiny_gets_the_values_its_prose_was_written_from():
    s = ablation_settings(load_profile("tiny"), 80_000, 16_000)
    assert s.target_ks == (64, 256) and s.target_taus == (3.0, 10.0)
    assert s.train_tokens == (20_000, 40_000, 80_000)
    # the kNN-LM grid reaches 4 x the results table's largest k (1024): what lies past it
    assert s.k_grid == (1, 4, 16, 64, 256, 1024, 4096)
    assert s.temperature_grid == (1.0, 3.0, 10.0, 30.0, 100.0)
    assert s.queries == 4000 and s.betas == (0.0, 0.5, 1.0)


@pytest.mark.parametrize("name", [n for n in PROFILE_NAMES if n != "auto"])
def test_every_profile_gets_variants_around_its_own_knobs(name):
    p = load_profile(name)
    n_train = p.max_train_tokens or 10**8
    s = ablation_settings(p, n_train, p.max_eval_tokens or 250_000)
    assert len(s.target_ks) == 2 and s.target_ks[1] == 4 * s.target_ks[0]
    assert max(s.target_ks) <= max(*p.knn_k_grid, p.k)  # never past the kNN-LM grid's largest k
    if p.neighbour_cache_k:
        assert max(s.target_ks) < p.neighbour_cache_k
    if 4 * p.k <= min(max(*p.knn_k_grid, p.k), (p.neighbour_cache_k or 10**9) - 1):
        assert s.target_ks == (p.k, 4 * p.k)
    assert s.target_taus[0] == p.knn_temperature < s.target_taus[1]
    assert s.train_tokens[-1] == n_train and all(a < b for a, b in zip(s.train_tokens, s.train_tokens[1:]))
    # the kNN-LM grid goes past the profile's grid (4 x its largest k) unless the keys run out
    assert s.k_grid[-1] == min(4 * max(p.knn_k_grid), n_train - 1) >= max(s.target_ks)
    assert p.knn_temperature in s.temperature_grid
    assert 0 < s.queries <= 5000


def test_small_worlds_stay_inside_their_data():
    p = load_profile("tiny", k=64)
    s = ablation_settings(p, 200, 40)  # 200 keys: no k above 199
    assert max(s.target_ks) <= 199 and s.k_grid[-1] == 199 and s.queries == 10
    edge = load_profile("tiny", knn_temperature=30.0)  # τ at the top of its grid: 3τ above it
    assert ablation_settings(edge, 80_000, 16_000).target_taus == (30.0, 90.0)


def test_overrides_replace_derived_values_and_unknown_names_are_refused():
    p = load_profile("tiny")
    s = ablation_settings(p, 80_000, 16_000, target_ks=[8, 32], queries=None)
    assert s.target_ks == (8, 32) and s.queries == 4000
    with pytest.raises(ValueError, match="target_kz"):
        ablation_settings(p, 80_000, 16_000, target_kz=[8])


def test_k_grid_is_powers_of_four_up_to_the_largest():
    assert k_grid(256) == (1, 4, 16, 64, 256) and k_grid(100) == (1, 4, 16, 64, 100)
