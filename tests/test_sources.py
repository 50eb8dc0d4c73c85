"""Corpus sources: your own files, hub data sets, clear errors, and loading bounded by the caps."""
import json
from pathlib import Path

import numpy as np
import pytest

from memdec_helpers import load_corpus, load_profile
from memdec_helpers.stages.corpus import _tokenize_until, load_documents, split_order, text_pieces, tokenize_documents
from memdec_helpers.runtime.models import load_tokenizer
from memdec_helpers.stages.sources import bundled_documents, open_source, parse_hub_spec

WORDS = "the of and to in that he shall unto for his a lord they be is him not them it".split()


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(load_profile("tiny"))


def write_corpus(folder: Path, n_docs: int = 12, words: int = 400, seed: int = 0) -> Path:
    """A folder of .txt, .md and one .jsonl file of random English-ish words."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    text = lambda: " ".join(rng.choice(WORDS, words)) + ".\n"  # noqa: E731
    for i in range(n_docs):
        (folder / f"doc{i:02d}.{'md' if i % 3 else 'txt'}").write_text(text(), encoding="utf-8")
    lines = [json.dumps({"text": text(), "id": j}) for j in range(4)]
    (folder / "more.jsonl").write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    return folder


def files_profile(tmp_path, source: str, **knobs):
    knobs = {"max_train_tokens": 2000, "max_eval_tokens": 300, "validation_fraction": 0.15,
             "test_fraction": 0.15, "knn_k_grid": [16], **knobs}  # k's within a few hundred keys
    return load_profile("tiny", artifacts_dir=str(tmp_path / "artifacts"), domain_corpus=source,
                        **knobs)


# --- files: --------------------------------------------------------------------------------

def test_files_corpus_splits_by_document_and_caches(tmp_path):
    folder = write_corpus(tmp_path / "texts")
    profile = files_profile(tmp_path, f"files:{folder}")
    tokens = load_corpus(profile, progress=False)
    assert [len(tokens[s]) for s in ("train", "validation", "test")] == [2000, 300, 300]
    manifest = json.loads(next((tmp_path / "artifacts").rglob("manifest.json")).read_text())
    held = {s: set(manifest["documents"][s]) for s in ("train", "validation", "test")}
    assert not held["train"] & held["validation"] and not held["train"] & held["test"]
    assert sum(manifest["documents_in_split"].values()) == 12 + 4  # 12 files + 4 JSON lines
    assert any(name.startswith("more.jsonl:") for names in held.values() for name in names)
    again = load_corpus(profile, progress=False)
    assert all(np.array_equal(tokens[s], again[s]) for s in tokens)


def test_files_glob_and_document_text(tmp_path, tokenizer):
    folder = write_corpus(tmp_path / "texts")
    docs = load_documents(f"files:{folder}/*.md")
    assert len(docs) == 8 and all(name.endswith(".md") for name, _ in docs)
    assert docs[0][1] == (folder / docs[0][0]).read_text(encoding="utf-8")
    jsonl = dict(load_documents(f"files:{folder}/*.jsonl"))
    assert jsonl["more.jsonl:2"] == json.loads((folder / "more.jsonl").read_text().splitlines()[1])["text"]


def test_edited_file_rebuilds(tmp_path):
    folder = write_corpus(tmp_path / "texts")
    profile = files_profile(tmp_path, f"files:{folder}", max_train_tokens=None)
    before = load_corpus(profile, progress=False)
    (folder / "doc99.txt").write_text("and the lord said unto them " * 50, encoding="utf-8")
    after = load_corpus(profile, progress=False)
    assert sum(len(t) for t in after.values()) > sum(len(t) for t in before.values())


@pytest.mark.parametrize("make,match", [
    (lambda d: None, "no .txt, .md or .jsonl"),
    (lambda d: (d / "a.txt").write_bytes("caf\xe9 latin-1".encode("latin-1")), "a.txt is not UTF-8"),
    (lambda d: (d / "b.jsonl").write_text('{"text": "ok"}\n{"text": 3}\n'), "b.jsonl, line 2"),
    (lambda d: (d / "c.jsonl").write_text('{"text": "ok"}\nnot json\n'), "c.jsonl, line 2 is not valid JSON"),
])
def test_bad_folder_fails_before_any_work_naming_the_file(tmp_path, make, match):
    folder = tmp_path / "texts"
    folder.mkdir()
    make(folder)
    with pytest.raises(ValueError, match=match):
        load_corpus(files_profile(tmp_path, f"files:{folder}"), progress=False)
    assert not list((tmp_path / "artifacts").rglob("*.npy"))


def test_missing_folder_and_unsupported_glob_match(tmp_path):
    with pytest.raises(ValueError, match="no such file or folder"):
        open_source(f"files:{tmp_path / 'nowhere'}")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="x.csv, which is not"):
        open_source(f"files:{tmp_path}/*")


def test_corpus_too_small_for_the_caps_keeps_the_cache(tmp_path):
    folder = write_corpus(tmp_path / "texts")
    profile = files_profile(tmp_path, f"files:{folder}")
    first = load_corpus(profile, progress=False)
    stage = next((tmp_path / "artifacts").rglob("manifest.json")).parent
    saved = {p.name: p.read_bytes() for p in stage.iterdir()}
    for path in folder.iterdir():
        if path.name not in ("doc00.txt", "doc01.md", "doc02.md"):
            path.unlink()
    with pytest.raises(ValueError, match="too small for the profile's caps.*max_(train|eval)_tokens"):
        load_corpus(profile, progress=False)
    assert {p.name: p.read_bytes() for p in stage.iterdir()} == saved  # nothing overwritten
    assert len(first["train"]) == 2000


def test_unknown_source_kind():
    with pytest.raises(ValueError, match="files:<folder or glob>"):
        open_source("folder:/tmp")


# --- hub: (a local DatasetDict stands in for the hub) --------------------------------------

def fake_hub(monkeypatch, splits: dict):
    import datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    built = datasets.DatasetDict({s: datasets.Dataset.from_dict(cols) for s, cols in splits.items()})
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append(a) or built)
    return calls


def wikitext_lines(n_articles: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    lines = []
    for a in range(n_articles):
        lines += [" = Article %d = \n" % a, " \n"] + [" ".join(rng.choice(WORDS, 30)) + " \n"] * 3
        lines += [" = = Section = = \n", " ".join(rng.choice(WORDS, 20)) + " \n"]
    return lines


def test_hub_wikitext_is_cut_into_articles_and_streamed(monkeypatch, tmp_path):
    calls = fake_hub(monkeypatch, {s: {"text": wikitext_lines(6, i)}
                                   for i, s in enumerate(("train", "validation", "test"))})
    docs = load_documents("hub:Salesforce/wikitext:wikitext-103-raw-v1")
    assert calls[0] == ("Salesforce/wikitext", "wikitext-103-raw-v1")
    assert [name for name, _ in docs["train"]] == [f"Article {a}" for a in range(6)]
    assert "Section" in docs["train"][0][1] and "Article 1" not in docs["train"][0][1]
    profile = files_profile(tmp_path, "hub:Salesforce/wikitext:wikitext-103-raw-v1",
                            max_train_tokens=300, max_eval_tokens=100)
    tokens = load_corpus(profile, progress=False)
    assert [len(tokens[s]) for s in ("train", "validation", "test")] == [300, 100, 100]


def test_hub_named_column_single_split_is_split_by_document(monkeypatch):
    rows = [" ".join(np.random.default_rng(i).choice(WORDS, 50)) for i in range(40)]
    fake_hub(monkeypatch, {"train": {"body": rows, "id": list(range(40))}})
    source = open_source("hub:someone/notes::body")
    assert len(source) == 40 and source.read(7) == rows[7]
    assert source.sizes.tolist() == [len(r) for r in rows]
    with pytest.raises(ValueError, match="no text column 'text'.*'body'"):
        open_source("hub:someone/notes")


def test_parse_hub_spec():
    assert parse_hub_spec("Salesforce/wikitext:wikitext-2-raw-v1") == (
        "Salesforce/wikitext", "wikitext-2-raw-v1", "text")
    assert parse_hub_spec("org/name::body") == ("org/name", None, "body")
    with pytest.raises(ValueError, match="hub:<data set>"):
        parse_hub_spec("a:b:c:d")


# --- memory bounded by the caps ------------------------------------------------------------

def test_tokenizing_stops_reading_once_the_cap_is_met(tokenizer):
    docs = bundled_documents("kjv-ot")
    read = []

    def stream():
        for doc in docs:
            read.append(doc[0])
            yield doc

    ids, names = _tokenize_until(tokenizer, stream(), 5000)
    assert len(ids) == 5000
    assert len(read) <= len(names) + 64  # at most one tokenizer batch beyond the cap
    assert len(read) < len(docs) / 4


def test_long_documents_are_cut_without_changing_tokens(tokenizer):
    text = bundled_documents("shakespeare")[0][1][:60000]
    pieces = list(text_pieces(text, 5000))
    assert "".join(pieces) == text and max(map(len, pieces)) <= 5000 and len(pieces) > 12
    whole = tokenize_documents(tokenizer, [("play", text)])
    cut, _ = _tokenize_until(tokenizer, [("play", text)], None, max_chars=5000)
    np.testing.assert_array_equal(cut, whole)
    no_spaces = "x" * 12001
    assert "".join(text_pieces(no_spaces, 5000)) == no_spaces  # hard cuts when nothing is safe


def test_split_order_is_a_partition_in_shuffled_order():
    sizes = np.random.default_rng(0).integers(1, 1000, 500)
    order = split_order(sizes, 0.1, 0.2, seed=3)
    together = np.concatenate([order["test"], order["validation"], order["train"]])
    np.testing.assert_array_equal(together, np.random.default_rng(3).permutation(500))
    share = {s: sizes[idx].sum() / sizes.sum() for s, idx in order.items()}
    assert 0.2 <= share["test"] < 0.2 + 1000 / sizes.sum()
    assert 0.1 <= share["validation"] < 0.1 + 1000 / sizes.sum()
