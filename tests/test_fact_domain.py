"""The generated fact domain: same seed -> same bytes (and the shipped file), facts restated in
new words in the held-out splits, a pre-split source, and fact masks aligned with the tokens."""
from __future__ import annotations

import importlib.util
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from memdec_helpers import load_corpus, load_profile
from memdec_helpers.runtime.models import load_tokenizer
from memdec_helpers.stages.corpus import load_documents
from memdec_helpers.stages.facts import fact_masks, split_fact_ids
from memdec_helpers.stages.sources import CORPORA_DIR, bundled_records, open_source

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_fact_domain.py"


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("make_fact_domain", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_fact_domain"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def records():
    return bundled_records("facts")


def test_same_seed_same_bytes_and_the_shipped_file_is_the_generators(generator, tmp_path):
    first = generator.to_bytes(generator.generate(generator.SEED))
    assert first == generator.to_bytes(generator.generate(generator.SEED))
    assert first == (CORPORA_DIR / "facts.jsonl.gz").read_bytes()
    assert generator.to_bytes(generator.generate(generator.SEED + 1)) != first
    out = tmp_path / "facts.jsonl.gz"
    assert generator.main(["--out", str(out)]) == 0 and out.read_bytes() == first
    assert generator.main(["--out", str(out), "--check"]) == 0
    out.write_bytes(first[:-1])
    assert generator.main(["--out", str(out), "--check"]) == 1


def test_spans_name_the_objects_and_facts_are_restated_in_new_words(generator, records):
    stated = defaultdict(lambda: defaultdict(list))  # split -> fact id -> sentences
    wordings = defaultdict(set)  # split -> (fact id, wording)
    for r in records:
        assert r["doc"].startswith(r["split"] + "/")
        for start, end, fact, wording in r["facts"]:
            obj = r["text"][start:end]
            assert obj and obj == obj.strip() and r["text"][end] in ".,"
            line_start = max(r["text"].rfind(". ", 0, start) + 2, r["text"].rfind("\n", 0, start) + 1)
            stated[r["split"]][fact].append(r["text"][line_start:end])
            wordings[r["split"]].add((fact, wording))
            assert (wording == "train") == (r["split"] == "train")
    train, test, val = stated["train"], stated["test"], stated["validation"]
    assert all(len(s) == generator.TRAIN_DOCS == len(set(s)) for s in train.values())
    verbatim = {f for f, w in wordings["test"] if w == "verbatim"}
    reworded = {f for f, w in wordings["test"] if w == "reworded"} & set(train)
    unseen_test = set(test) - set(train)
    assert len(verbatim) > 60 and len(reworded) > 60 and len(unseen_test) > 60
    assert verbatim <= set(train) and not verbatim & reworded
    assert not set(test) & set(val)  # validation and test state different facts
    train_text = "".join(r["text"] for r in records if r["split"] == "train")
    for _, held_out in generator.TEMPLATES.values():  # no training sentence has their words
        for template in held_out:
            words = max(re.split(r"\{[so]\}", template), key=len)
            assert words not in train_text, template
    for fact in reworded:  # the same object, in a sentence no training document has
        assert not set(test[fact]) & set(train[fact])
    for fact in verbatim:  # the same object in one of the very sentences of the training text
        assert set(test[fact]) <= set(train[fact])


def test_the_fact_corpus_is_pre_split_and_cannot_be_joined():
    source = open_source("bundled:facts")
    assert isinstance(source, dict) and set(source) == {"train", "validation", "test"}
    assert all(name.startswith("test/") for name, _ in source["test"])
    assert len(load_documents("bundled:facts")["train"]) == len(source["train"])
    with pytest.raises(ValueError, match="pre-split"):
        open_source("bundled:facts+kjv-ot")


@pytest.mark.slow
def test_fact_masks_line_up_with_the_tokens_and_follow_the_cap(tmp_path):
    profile = load_profile("tiny", domain_corpus="bundled:facts", max_train_tokens=20000,
                           max_eval_tokens=3000, artifacts_dir=str(tmp_path))
    tokens = load_corpus(profile, progress=False)
    masks = fact_masks(profile, "test")
    assert list(masks) == ["verbatim", "reworded", "unseen"]
    assert all(m.shape == (len(tokens["test"]) - 1,) for m in masks.values())
    assert sum(m.astype(int) for m in masks.values()).max() == 1  # one kind per token
    assert all(m.sum() > 20 for m in masks.values())
    tokenizer = load_tokenizer(profile)
    any_fact = masks["verbatim"] | masks["reworded"] | masks["unseen"]
    fact_text = tokenizer.decode(tokens["test"][1:][any_fact])
    assert "Records show" not in fact_text and "chronicle" not in fact_text
    ids, _ = split_fact_ids(profile, "test")
    assert (ids[1:] >= 0).sum() == any_fact.sum()
    trained = set(np.unique(split_fact_ids(profile, "train")[0]))
    assert set(ids[1:][masks["verbatim"] | masks["reworded"]]) <= trained
    assert not set(ids[1:][masks["unseen"]]) & trained
    more = load_profile("tiny", domain_corpus="bundled:facts", max_train_tokens=None,
                        max_eval_tokens=3000, artifacts_dir=str(tmp_path))
    wider = fact_masks(more, "test")  # measured: unseen 199 -> 152 tokens, verbatim 99 -> 146
    assert wider["unseen"].sum() < masks["unseen"].sum()  # more training text, more facts seen
    assert (wider["verbatim"] | wider["reworded"]).sum() > (masks["verbatim"] | masks["reworded"]).sum()


def test_fact_masks_need_a_corpus_that_marks_its_facts(profile):
    with pytest.raises(ValueError, match="does not mark its facts"):
        fact_masks(profile, "test")


def test_fact_examples_show_the_three_kinds_of_fact():
    from memdec_helpers.stages.facts import fact_example
    verbatim, reworded, unseen = (fact_example("bundled:facts", k) for k in ("verbatim", "reworded", "unseen"))
    assert verbatim["test"] == verbatim["train"]  # the very training sentence
    obj = lambda sentence: sentence[sentence.index("[") + 1:sentence.index("]")]
    assert reworded["test"] != reworded["train"] and obj(reworded["test"]) == obj(reworded["train"])
    assert "train" not in unseen and unseen["test"].count("[") == 1
    with pytest.raises(ValueError, match="kind='seen'"):
        fact_example("bundled:facts", "seen")
