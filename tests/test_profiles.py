"""Profiles: every YAML loads, overrides apply, bad names and knobs fail with clear errors."""
import pytest

from memdec_helpers import load_profile
from memdec_helpers.profiles import KNOBS, PROFILE_NAMES, resolve_auto


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
    path.write_text("k: 40\n")
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


def test_every_stage_has_its_knobs():
    needed = {"context_length", "stride", "key_layer", "index_type", "ivf_nlist", "pq_code_bytes",
              "nprobe", "k", "knn_temperature", "target_top_m", "beta", "memdec_layers",
              "memdec_init", "learning_rate", "train_steps", "alpha_grid", "seed", "device", "dtype"}
    assert needed <= set(KNOBS)


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
