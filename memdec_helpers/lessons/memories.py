"""Lesson 07's "which memory when" table, read off the measured comparison (never written by
hand: on any world it names the memory that won there, with its numbers and its price)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# the rows of a comparison that are memories, and their names in the table
MEMORIES = {"base + kNN-LM": "kNN-LM", "base + MemDec": "Memory Decoder",
            "base + MLP memory": "MLP memory", "DAPT": "DAPT", "base + DAPT": "base + DAPT"}
COST_NAMES = {"base + kNN-LM": "kNN-LM", "base + MemDec": "Memory Decoder",
              "base + MLP memory": "MLP memory"}


def memory_rows(rows: Sequence[dict[str, Any]], domain: str) -> dict[str, dict[str, Any]]:
    """method -> its row on `domain` with base model 0 (the memories only)."""
    return {r["method"]: r for r in rows if r.get("domain") == domain and r["method"] in MEMORIES
            and r.get("base") in (0, None)}


def ranked(values: dict[str, float | None]) -> list[tuple[str, float]]:
    """(name, value) pairs with a value, lowest first."""
    return sorted(((n, v) for n, v in values.items() if v is not None), key=lambda nv: nv[1])


PAR = {"ppl": 0.03, "bytes": 0.01, "ms": 0.25}  # a runner-up this close (relative) is on par:
# 3% as lesson 04's "on par", 1% of bytes, 25% of a time (timings on a shared machine are noisy)


def best(rows: Sequence[dict[str, Any]], domain: str, field: str) -> tuple[str, float, str]:
    """(the memory with the lowest `field` on `domain`, its value, the runner-up as text)."""
    found = ranked({m: r.get(field) for m, r in memory_rows(rows, domain).items()})
    if not found:
        raise ValueError(f"no memory row of domain {domain!r} has {field}: build the comparison "
                         "first (P.memory_comparison)")
    second = f"{MEMORIES[found[1][0]]} {found[1][1]:.2f}" if len(found) > 1 else "—"
    return MEMORIES[found[0][0]], found[0][1], second


def winner(found: list[tuple[str, float]], par: float) -> str:
    """The lowest entry's name, or 'A ≈ B (on par)' when the runner-up is within `par` of it."""
    if len(found) > 1 and found[1][1] <= found[0][1] * (1 + par):
        return f"{found[0][0]} ≈ {found[1][0]} (on par)"
    return found[0][0]


def which_memory_when(rows: Sequence[dict[str, Any]], narrative: str, facts: str,
                      storage: dict[str, int], cost: dict[str, float] | None = None) -> str:
    """A markdown table: for each need, the memory this run measured best (two, 'on par', when
    the runner-up is within PAR of it), its number, the runner-up, and the price it pays on
    general text (its general test perplexity)."""
    needs = [(f"the lowest perplexity on narrative text (`{narrative}`)", narrative, "test_ppl"),
             (f"the lowest perplexity on fact-dense text (`{facts}`)", facts, "test_ppl"),
             ("to recall facts the training text states word for word", facts, "verbatim_fact_ppl"),
             ("to recall facts the training text states, asked in new words", facts,
              "reworded_fact_ppl"),
             (f"to keep general text intact (after `{facts}`)", facts, "general_test_ppl")]
    lines = ["| you want | reach for (measured here) | its number | runner-up | its general-text ppl |",
             "|---|---|---|---|---|"]
    for want, domain, field in needs:
        mine = memory_rows(rows, domain)
        found = ranked({MEMORIES[m]: r.get(field) for m, r in mine.items()})
        if not found:
            continue
        general = mine[_method(found[0][0])]["general_test_ppl"]
        second = f"{found[1][0]} {found[1][1]:.2f}" if len(found) > 1 else "—"
        lines.append(f"| {want} | {winner(found, PAR['ppl'])} | {found[0][1]:.2f} ppl | {second} "
                     f"| {general:.1f} |")
    lines.append(_storage_line(storage))
    if cost:
        lines.append(_cost_line(cost))
    return "\n".join(lines)


def _method(name: str) -> str:
    return next(m for m, n in MEMORIES.items() if n == name)


def _storage_line(storage: dict[str, int]) -> str:
    """The memory with the fewest bytes to keep beside the base model."""
    sizes = ranked({"Memory Decoder": storage["memdec_bytes_fp16"],
                    "MLP memory": storage["mlp_memory_bytes_fp16"],
                    "kNN-LM": storage["datastore_bytes"]})
    (_, size), (second, other) = sizes[0], sizes[1]
    return (f"| the least to store beside the base | {winner(sizes, PAR['bytes'])} | "
            f"{size / 1e6:.2f} MB | {second} {other / 1e6:.2f} MB (datastore "
            f"{storage['datastore_bytes'] / 1e6:.1f} MB) | — |")


def _cost_line(cost: dict[str, float]) -> str:
    """The memory that adds the least decoding time per token to the base's own."""
    added = ranked({COST_NAMES[m]: v - cost["base"] for m, v in cost.items() if m in COST_NAMES})
    (_, ms), (second, other) = added[0], added[1]
    return (f"| the least time added per token | {winner(added, PAR['ms'])} | +{ms:.3f} ms | "
            f"{second} +{other:.3f} ms | — |")
