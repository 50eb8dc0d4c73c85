"""Lesson 07's "which memory when" table names, for each need, the memory with the lowest
measured number (read from the rows, so it follows any world's results)."""
import pytest

from memdec_helpers.lessons.memories import best, which_memory_when


def row(domain, method, test, general, verbatim=None, reworded=None, base=0):
    return {"domain": domain, "method": method, "base": base, "test_ppl": test,
            "general_test_ppl": general, "verbatim_fact_ppl": verbatim,
            "reworded_fact_ppl": reworded}


ROWS = [row("story", "base", 140, 94), row("story", "base + kNN-LM", 69, 125),
        row("story", "DAPT", 62, 180), row("story", "base + MemDec", 68, 134),
        row("story", "base + MLP memory", 71, 135),
        row("facts", "base", 300, 94, 900, 800), row("facts", "base + kNN-LM", 20, 190, 4, 700),
        row("facts", "DAPT", 25, 2400, 9, 650), row("facts", "base + MemDec", 30, 130, 12, 600),
        row("facts", "base + MLP memory", 33, 131, 15, 610),
        row("facts", "base + MemDec", 10, 90, 1, 1, base=1)]  # another base: never counted
STORAGE = {"memdec_bytes_fp16": 1_060_000, "mlp_memory_bytes_fp16": 1_050_000,
           "datastore_bytes": 15_700_000}
COST = {"base": 0.05, "base + MemDec": 0.095, "base + MLP memory": 0.09, "base + kNN-LM": 0.28}


def test_each_need_names_the_lowest_number_and_its_price():
    assert best(ROWS, "story", "test_ppl") == ("DAPT", 62, "Memory Decoder 68.00")
    assert best(ROWS, "facts", "verbatim_fact_ppl")[:2] == ("kNN-LM", 4)
    assert best(ROWS, "facts", "reworded_fact_ppl")[:2] == ("Memory Decoder", 600)
    assert best(ROWS, "facts", "general_test_ppl")[:2] == ("Memory Decoder", 130)  # base excluded
    lines = which_memory_when(ROWS, "story", "facts", STORAGE, COST).splitlines()[2:]
    assert len(lines) == 7
    assert lines[0].endswith("| DAPT | 62.00 ppl | Memory Decoder 68.00 | 180.0 |")
    assert lines[2].endswith("| kNN-LM | 4.00 ppl | DAPT 9.00 | 190.0 |")  # its price: 190
    assert "| MLP memory ≈ Memory Decoder (on par) | 1.05 MB | Memory Decoder 1.06 MB" in lines[5]
    assert "| MLP memory ≈ Memory Decoder (on par) | +0.040 ms | Memory Decoder +0.045 ms" in lines[6]


def test_a_runner_up_within_the_tolerance_is_named_on_par():
    close = [r if r["method"] != "base + MemDec" else {**r, "test_ppl": 62.0 * 1.029}
             for r in ROWS]  # 2.9% behind DAPT: on par (3%), 3.1% is not
    first = which_memory_when(close, "story", "facts", STORAGE).splitlines()[2]
    assert "| DAPT ≈ Memory Decoder (on par) | 62.00 ppl |" in first
    far = [r if r["method"] != "base + MemDec" else {**r, "test_ppl": 62.0 * 1.031} for r in ROWS]
    assert "| DAPT | 62.00 ppl |" in which_memory_when(far, "story", "facts", STORAGE).splitlines()[2]
    spread = {**STORAGE, "mlp_memory_bytes_fp16": 500_000}
    assert "| MLP memory | 0.50 MB |" in which_memory_when(ROWS, "story", "facts", spread)


def test_a_field_no_row_has_is_left_out_and_an_unknown_domain_is_refused():
    story_only = [r for r in ROWS if r["domain"] == "story"]
    table = which_memory_when(story_only, "story", "facts", STORAGE)
    assert "word for word" not in table and "time added" not in table
    with pytest.raises(ValueError, match="no memory row of domain 'nowhere'"):
        best(ROWS, "nowhere", "test_ppl")
