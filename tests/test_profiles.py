"""Profiles: every YAML loads, overrides apply; a profile is frozen, hashable and validated
when it is made (types, ranges, related knobs), so bad knobs fail at once, by name."""
import dataclasses

import pytest

from memdec_helpers import Profile, load_profile
from memdec_helpers.profiles import PROFILE_NAMES, resolve_auto


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_every_profile_loads(name):
    profile = load_profile(name)
    assert profile.name == name
    assert profile.context_length >= profile.stride > 0


def test_override_applies_and_keeps_the_rest():
    base, changed = load_profile("tiny"), load_profile("tiny", k=40, beta=1.0)
    assert (changed.k, changed.beta) == (40, 1.0)
    assert changed.context_length == base.context_length


def test_unknown_profile_name_is_named():
    with pytest.raises(ValueError, match="nonsense"):
        load_profile("nonsense")


def test_unknown_knob_is_named():
    with pytest.raises(ValueError, match="learning_rat"):
        load_profile("tiny", learning_rat=1e-3)


def test_unknown_knob_in_yaml_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("k: 8\nbogus_knob: 3\n")
    with pytest.raises(ValueError, match="bogus_knob"):
        load_profile(str(path))


def test_yaml_path_profile(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("extends: tiny\nk: 40\n")
    profile = load_profile(str(path))
    assert (profile.name, profile.k) == ("mine", 40)


@pytest.mark.parametrize("knob,value", [("beta", 1.5), ("beta", -0.1), ("knn_temperature", 0.0),
                                        ("alpha_grid", [0.5, 2.0]), ("stride", 0),
                                        ("index_type", "hnsw"), ("device", "tpu")])
def test_invalid_values_are_named(knob, value):
    with pytest.raises(ValueError, match=knob):
        load_profile("tiny", **{knob: value})


def test_auto_is_tiny_without_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("COLAB_RELEASE_TAG", "x")
    assert resolve_auto() == "tiny"  # with CUDA: tests/test_plan.py (colab only where it fits)


def yaml_profile(tmp_path, text):
    path = tmp_path / "mine.yaml"
    path.write_text("extends: tiny\n" + text)
    return load_profile(str(path))


def test_yaml_numbers_written_as_strings_become_numbers(tmp_path):
    """PyYAML reads `1e-3` (no dot) as a string; it used to pass and fail after three stages."""
    profile = yaml_profile(tmp_path, "learning_rate: 1e-3\nindex_train_size: 1e5\nk: '40'\n")
    assert profile.learning_rate == 0.001 and isinstance(profile.learning_rate, float)
    assert profile.index_train_size == 100000 and isinstance(profile.index_train_size, int)
    assert profile.k == 40 and isinstance(profile.k, int)


@pytest.mark.parametrize("text,knob", [
    ("k: '64x'", "k"), ("k: 6.5", "k"), ("k: true", "k"), ("learning_rate: fast", "learning_rate"),
    ("train_batch_size: 0", "train_batch_size"),  # used to blame train_steps
    ("base_models: x", "base_models"),  # used to load a model named 'x'
    ("base_models: []", "base_models"), ("alpha_grid: 0.5", "alpha_grid"),
    ("max_train_tokens: 0", "max_train_tokens"),  # used to mean "everything"
    ("max_eval_tokens: -5", "max_eval_tokens"),  # used to mean "all but the last 5"
    ("name: ../../victim", "name"), ("name: a/b", "name"), ("name: .hidden", "name"),
    ("beta: .nan", "beta"), ("knn_temperature: .inf", "knn_temperature"),
    ("stride: 200", "stride"), ("target_top_m: 65", "target_top_m"),
    ("memdec_init: base:2", "memdec_init"), ("memdec_init: 'base:x'", "memdec_init"),
    ("memdec_heads: 3", "memdec_heads"), ("validation_fraction: 0.6\ntest_fraction: 0.5", "test_fraction"),
    ("tokenizer: ''", "tokenizer"), ("context_length: null", "context_length"),
    ("search_device: tpu", "search_device"), ("micro_batch_size: 0", "micro_batch_size"),
    ("budget_minutes: 0", "budget_minutes"), ("budget_gpu_gb: '-1'", "budget_gpu_gb"),
    ("domain_corpus: kjv", "domain_corpus"), ("general_corpus: 'web:x'", "general_corpus"),
    ("domain_corpus: 'files:'", "domain_corpus"),
])
def test_bad_yaml_knobs_are_named(tmp_path, text, knob):
    with pytest.raises(ValueError, match=f"knob {knob}="):
        yaml_profile(tmp_path, text + "\n")


def test_profile_is_frozen_hashable_and_replace_revalidates():
    profile = load_profile("tiny", base_models=["bundled:tiny-gpt2-small"], alpha_grid=[0, 1])
    assert profile.base_models == ("bundled:tiny-gpt2-small",)  # lists become tuples
    assert profile.alpha_grid == (0.0, 1.0) and all(type(a) is float for a in profile.alpha_grid)
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile.k = 3
    assert hash(profile) == hash(load_profile("tiny", base_models=("bundled:tiny-gpt2-small",),
                                              alpha_grid=(0.0, 1.0)))
    assert {profile: 1}[dataclasses.replace(profile, k=profile.k)] == 1
    assert dataclasses.replace(profile, k="32").k == 32
    with pytest.raises(ValueError, match="knob k=0"):
        dataclasses.replace(profile, k=0)
    with pytest.raises(ValueError, match="knob name="):
        Profile(name="../x")


def test_yaml_extends_another_profile(tmp_path):
    path = tmp_path / "my_domain.yaml"
    path.write_text("extends: colab\ndomain_corpus: files:/data/contracts\nmax_train_tokens: 500000\n")
    profile, colab = load_profile(str(path)), load_profile("colab")
    assert (profile.name, profile.domain_corpus, profile.max_train_tokens) == (
        "my_domain", "files:/data/contracts", 500000)
    assert profile.k == colab.k and profile.base_models == colab.base_models
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(ValueError, match="loops"):
        load_profile(str(tmp_path / "loop.yaml"))
    (tmp_path / "bad.yaml").write_text("extends: colab\nbogus: 1\n")
    with pytest.raises(ValueError, match="bogus"):
        load_profile(str(tmp_path / "bad.yaml"))
