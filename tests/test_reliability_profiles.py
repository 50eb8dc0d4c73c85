"""Reliability of profiles (issue 21): paths resolved where the user wrote them, YAML files
read strictly (extends, duplicate keys, suffix case, encoding), seeds and schedules checked."""
import pytest

from memdec_helpers import load_profile


def write(path, text, encoding="utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def test_relative_paths_inside_a_yaml_are_taken_from_its_folder(tmp_path, monkeypatch):
    """A relative `files:` path was looked up from wherever the kernel ran (notebooks/), while
    `extends:` resolved from the YAML's folder."""
    conf = write(tmp_path / "conf" / "my.yaml",
                 "extends: tiny\ndomain_corpus: files:texts\ngeneral_corpus: files:../shared/*.md\n"
                 "memdec_init: ../decoders/mine\n")
    monkeypatch.chdir(tmp_path / "conf")
    here = load_profile("my.yaml")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    there = load_profile(str(conf))
    assert here == there
    assert there.domain_corpus == f"files:{tmp_path}/conf/texts"
    assert there.general_corpus == f"files:{tmp_path}/shared/*.md"
    assert there.memdec_init == f"{tmp_path}/decoders/mine"


def test_relative_paths_given_in_python_are_taken_from_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    profile = load_profile("tiny", domain_corpus="files:my texts/*.txt")
    assert profile.domain_corpus == f"files:{tmp_path}/my texts/*.txt"
    for kept in ("files:~/notes", "files:/data/x", "bundled:kjv-ot", "hub:org/name"):
        assert load_profile("tiny", domain_corpus=kept).domain_corpus == kept
    assert load_profile("tiny", memdec_init="base:0").memdec_init == "base:0"


def test_a_yaml_without_extends_is_refused(tmp_path):
    """It silently started from the dataclass defaults: no caps, a decoder copying all of base 0."""
    path = write(tmp_path / "mine.yaml", "domain_corpus: files:/data\n")
    with pytest.raises(ValueError, match=r"mine\.yaml has no 'extends:'.*extends: tiny"):
        load_profile(str(path))


def test_a_duplicate_key_is_named_with_its_file_and_lines(tmp_path):
    path = write(tmp_path / "mine.yaml", "extends: tiny\nk: 8\nbeta: 0.2\nk: 16\n")
    with pytest.raises(ValueError, match=r"mine\.yaml.*'k' twice \(lines 2 and 4\)"):
        load_profile(str(path))


def test_an_upper_case_suffix_is_a_yaml_file(tmp_path):
    path = write(tmp_path / "Mine.YAML", "extends: tiny\nk: 40\n")
    assert (load_profile(str(path)).name, load_profile(str(path)).k) == ("Mine", 40)
    write(tmp_path / "child.Yml", "extends: Mine.YAML\nbeta: 0.25\n")
    assert load_profile(str(tmp_path / "child.Yml")).k == 40


def test_a_yaml_that_is_not_utf8_is_named(tmp_path):
    path = write(tmp_path / "mine.yaml", "extends: tiny\n# caf\xe9\nk: 8\n", encoding="latin-1")
    with pytest.raises(ValueError, match=r"mine\.yaml is not UTF-8 text \(line 2"):
        load_profile(str(path))


def test_a_yaml_syntax_error_is_named(tmp_path):
    path = write(tmp_path / "mine.yaml", "extends: tiny\nk: [8\n")
    with pytest.raises(ValueError, match=r"mine\.yaml is not valid YAML"):
        load_profile(str(path))


@pytest.mark.parametrize("knob", ["seed", "split_seed"])
def test_a_seed_too_large_for_numpy_is_named(knob):
    """seed >= 2**32 failed inside numpy, naming no knob."""
    with pytest.raises(ValueError, match=f"knob {knob}=4294967296.*2\\*\\*31"):
        load_profile("tiny", **{knob: 2**32})
    assert getattr(load_profile("tiny", **{knob: 2**31 - 1}), knob) == 2**31 - 1


def test_warmup_longer_than_training_is_named():
    with pytest.raises(ValueError, match=r"knob warmup_steps=500.*train_steps=240"):
        load_profile("tiny", warmup_steps=500)
    assert load_profile("tiny", warmup_steps=240).warmup_steps == 240
