"""Every shipped profile is tested as it ships: the rules that tie its knobs together (a bad
profile is refused by name, with the fix), and lessons 01 and 02 run on each of `cpu`, `colab`
and `gpu` with its own knobs (k 1024, τ 16, IVF-PQ, several decoder blocks, ...) on the bundled
models and corpora at reduced caps (slow: about a minute a profile on two CPU cores)."""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest
import yaml

import memdec_helpers
from memdec_helpers.cli import run
from memdec_helpers.profiles import (
    PROFILE_NAMES,
    Profile,
    load_profile,
    parse_memdec_init,
)

BUNDLED_KNOBS = ("domain_corpus", "general_corpus", "tokenizer", "base_models")  # tiny's
MODELS = Path(memdec_helpers.__file__).parent / "data" / "models"
SMALL = {"max_train_tokens": 4000, "max_eval_tokens": 1500, "train_steps": 4, "warmup_steps": 1,
         "device": "cpu", "dtype": "float32", "search_device": "cpu"}
PQ_CODE_BYTES = 32  # divides the bundled models' key widths, 96 and 192


def bundled_config(spec: str) -> dict:
    """The config.json of a bundled model (`bundled:<name>`)."""
    return json.loads((MODELS / spec.split(":", 1)[1] / "config.json").read_text())


def smoke_knobs(name: str) -> dict:
    """The knobs a reduced-caps copy of profile `name` changes: the bundled world of `tiny`,
    caps of a few thousand tokens, the CPU, and the shape knobs the bundled models force
    (windows within their 256 positions, PQ codes that divide their key widths, no more
    decoder blocks than the base has). Every other knob stays the profile's own: colab's 1024
    IVF lists become 102 on ~4,000 keys (39 keys a list), and a query whose nprobe = 32 lists
    hold fewer than k = 1024 keys is searched again with more lists."""
    shipped, tiny = load_profile(name), load_profile("tiny")
    knobs = {knob: getattr(tiny, knob) for knob in BUNDLED_KNOBS} | SMALL
    knobs["base_models"] = list(knobs["base_models"])
    positions = min(bundled_config(m)["n_positions"] for m in knobs["base_models"])
    knobs["context_length"] = min(shipped.context_length, positions)
    knobs["stride"] = min(shipped.stride, knobs["context_length"] // 2)
    if shipped.index_type == "ivfpq":
        knobs["pq_code_bytes"] = PQ_CODE_BYTES
    kind, index = parse_memdec_init(shipped.memdec_init)
    if kind == "base" and shipped.memdec_layers is not None:
        blocks = bundled_config(knobs["base_models"][index])["n_layer"]
        knobs["memdec_layers"] = min(shipped.memdec_layers, blocks)
    return knobs


def smoke_profile(name: str, folder: Path) -> Path:
    """A YAML that `extends:` the shipped profile with smoke_knobs(name)."""
    path = folder / f"smoke-{name}.yaml"
    path.write_text(yaml.safe_dump({"extends": name, "name": f"smoke-{name}",
                                    **smoke_knobs(name)}, sort_keys=False))
    return path


KEPT = ("k", "knn_temperature", "knn_k_grid", "knn_temperature_grid", "index_type", "nprobe",
        "ivf_nlist", "index_train_size",
        "target_top_m", "memdec_init", "grad_accum", "train_batch_size", "learning_rate",
        "key_layer", "beta", "alpha_grid", "knn_lambda_grid", "ablation_seeds")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cpu", "colab", "gpu"])
def test_a_shipped_profile_runs_lessons_01_and_02_on_the_bundled_world(name, tmp_path,
                                                                       monkeypatch, capsys):
    """colab's k 1024 (outside its grid) stopped lesson 02 with KeyError (1024, 16.0)."""
    path, shipped = smoke_profile(name, tmp_path), load_profile(name)
    profile = load_profile(str(path))
    assert {knob: getattr(profile, knob) for knob in KEPT} == {
        knob: getattr(shipped, knob) for knob in KEPT}  # the profile's own code paths
    monkeypatch.setenv("MEMDEC_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    out = tmp_path / "run"
    start = time.time()
    code = run.main(["--profile", str(path), "--only", "01", "02", "--out", str(out)])
    seconds = time.time() - start
    printed = capsys.readouterr()
    assert code == 0, printed.out[-2000:] + printed.err[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert {n: r["status"] for n, r in summary["lessons"].items()} == {
        "01_datastore": "ok", "02_knn_distributions": "ok"}
    assert summary["config"]["k"] == shipped.k and shipped.k in summary["config"]["knn_k_grid"]
    print(f"smoke {name}: lessons 01-02 in {seconds:.0f} s")


# --- the rules that tie knobs together --------------------------------------------------------

@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_a_shipped_profile_searches_its_own_k_and_temperature(name):
    profile = load_profile(name)
    assert profile.k in profile.knn_k_grid
    assert profile.knn_temperature in profile.knn_temperature_grid
    assert list(profile.knn_k_grid) == sorted(set(profile.knn_k_grid))
    assert max(profile.knn_k_grid) >= profile.k >= profile.target_top_m


@pytest.mark.parametrize("name", ["cpu", "colab", "gpu"])
def test_the_smoke_profiles_are_valid(name, tmp_path):
    """What the slow test runs, checked without running it (fails fast on a new knob)."""
    profile = load_profile(str(smoke_profile(name, tmp_path)))
    assert profile.max_train_tokens == SMALL["max_train_tokens"]


def test_k_and_temperature_join_their_grids_sorted():
    """By construction, not an error: the lessons read kNN-LM at (k, τ)."""
    profile = load_profile("tiny", k=32, knn_temperature=7.0, knn_k_grid=[256, 16, 16],
                           knn_temperature_grid=[30, 1.0])
    assert profile.knn_k_grid == (16, 32, 256)
    assert profile.knn_temperature_grid == (1.0, 7.0, 30.0)
    assert dataclasses.replace(profile, k=64).knn_k_grid == (16, 32, 64, 256)
    assert load_profile("colab").knn_k_grid == (256, 1024)


@pytest.mark.parametrize("knobs,knob,fix", [
    ({"max_train_tokens": 1000}, "knn_k_grid", "drop k > 999 from knn_k_grid"),  # tiny's has 1024
    ({"max_train_tokens": 600, "knn_k_grid": [16], "k": 599, "neighbour_cache_k": None}, "k",
     "lower k"),
    ({"max_train_tokens": 300, "knn_k_grid": [16], "neighbour_cache_k": 299},
     "neighbour_cache_k", "lower neighbour_cache_k"),
    ({"index_type": "ivfpq", "index_train_size": 255}, "index_train_size",
     "raise index_train_size"),
    ({"index_type": "ivfpq", "max_train_tokens": 256, "knn_k_grid": [16],
      "neighbour_cache_k": None}, "max_train_tokens", "flat or ivf_flat"),
    ({"target_top_m": 65}, "target_top_m", "k=64"),
    ({"warmup_steps": 500}, "warmup_steps", "train_steps"),
    ({"alpha_grid": [0.0, 1.5]}, "alpha_grid", "[0, 1]"),
    ({"knn_lambda_grid": [-0.1, 0.5]}, "knn_lambda_grid", "[0, 1]"),
    ({"knn_temperature_grid": [0.0]}, "knn_temperature_grid", "> 0"),
    ({"knn_k_grid": [0, 16]}, "knn_k_grid", ">= 1"),
])
def test_a_knob_that_contradicts_another_is_named_with_its_fix(knobs, knob, fix):
    with pytest.raises(ValueError, match=f"knob {knob}=") as error:
        load_profile("tiny", **knobs)
    assert fix in str(error.value)


def test_a_capped_datastore_that_fits_every_search_is_accepted():
    profile = load_profile("tiny", max_train_tokens=1026)  # 1025 keys: the grid's k 1024
    assert profile.max_train_tokens == 1026
    assert Profile(max_train_tokens=None, k=5000, target_top_m=8).k == 5000  # no cap: no check
