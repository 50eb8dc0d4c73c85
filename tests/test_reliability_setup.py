"""P.setup(name=...) (issue 21): it was a TypeError; now the name knob, or a clear error when
the name looks like a profile to load."""
import pytest

from memdec_helpers import pipeline as P


def test_setup_accepts_the_name_knob(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMDEC_ARTIFACTS", str(tmp_path))
    profile = P.setup("tiny", verbose=False, name="my-run", k=32)
    assert (profile.name, profile.k) == ("my-run", 32)
    assert P.setup(profile, verbose=False, name="other").name == "other"


@pytest.mark.parametrize("name", ["colab", "auto", "mine.yaml"])
def test_setup_with_a_profile_as_name_says_how_to_load_it(name):
    with pytest.raises(ValueError, match=rf"name={name!r}.*P\.setup\({name!r}\)"):
        P.setup(verbose=False, name=name)
