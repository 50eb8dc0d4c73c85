"""Peak memory while loading a capped corpus does not grow with the corpus.

A `files:` corpus (one document per .txt file, made from the bundled texts) of 1x, 10x and 100x
the profile's caps is loaded with `load_corpus` in a fresh process each time; a sampler records
the peak anonymous RSS. Next to it, the old way: every document read, then tokenized in one
call before capping. Prints a markdown table.

    python benchmarks/corpus_memory.py              # tiny's caps: 80k train + 2 x 16k held-out
    python benchmarks/corpus_memory.py --sizes 1 10
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
CHARS_PER_FILE = 20_000
CHARS_PER_TOKEN = 4.2  # the tiny BPE on these texts (measured by the child)

CHILD = r"""
import json, sys, time
sys.path.insert(0, HERE)
from rss import PeakSampler
sampler = PeakSampler()
import numpy as np
from memdec_helpers import load_corpus, load_profile
from memdec_helpers.runtime.models import load_tokenizer
from memdec_helpers.stages.corpus import load_documents

way, folder, root = sys.argv[1], sys.argv[2], sys.argv[3]
profile = load_profile("tiny", domain_corpus=f"files:{folder}", artifacts_dir=root)
tokenizer = load_tokenizer(profile)
tokenizer("warm up", add_special_tokens=False)
before = sampler.reset()
start = time.perf_counter()
if way == "streamed":
    tokens = sum(len(t) for t in load_corpus(profile, progress=False).values())
else:  # the old way: every document in memory, tokenized in one call, then capped
    texts = [text for _, text in load_documents(profile.domain_corpus)]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    tokens = sum(len(x) for x in ids)
seconds = time.perf_counter() - start
print(json.dumps({"before": before, "peak": sampler.read(), "seconds": seconds, "tokens": tokens}))
""".replace("HERE", repr(str(HERE)))


def write_corpus(folder: Path, chars: int) -> int:
    """Files of CHARS_PER_FILE characters cut from the bundled texts, repeated up to `chars`;
    returns the number of files."""
    from memdec_helpers.stages.sources import bundled_documents

    text = "\n".join(t for _, t in bundled_documents("kjv-ot+kjv-nt+shakespeare"))
    folder.mkdir(parents=True)
    written = count = 0
    while written < chars:
        lo = (count * CHARS_PER_FILE) % (len(text) - CHARS_PER_FILE)
        (folder / f"doc{count:06d}.txt").write_text(text[lo:lo + CHARS_PER_FILE], encoding="utf-8")
        written, count = written + CHARS_PER_FILE, count + 1
    return count


def smallest_corpus(profile) -> float:
    """Tokens of a corpus whose splits just fill the caps (10% margin)."""
    train_share = 1 - profile.validation_fraction - profile.test_fraction
    return 1.1 * max(profile.max_train_tokens / train_share,
                     profile.max_eval_tokens / min(profile.validation_fraction,
                                                   profile.test_fraction))


def measure(way: str, folder: Path, root: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, way, str(folder), str(root)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    from memdec_helpers import load_profile

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1, 10, 100],
                        help="corpus sizes, as multiples of the caps")
    parser.add_argument("--old-way", type=int, nargs="*", default=[1, 10],
                        help="sizes at which to run the old way too")
    args = parser.parse_args(argv)
    tiny = load_profile("tiny")
    fill = smallest_corpus(tiny)
    print(f"caps: {tiny.max_train_tokens:,} train + 2 x {tiny.max_eval_tokens:,} held-out tokens; "
          f"with {tiny.validation_fraction:.0%} of the documents held out for each of validation "
          f"and test, a corpus of ~{fill:,.0f} tokens fills them (1 x)\n")
    print("| corpus (x caps) | files | corpus tokens (est.) | way | tokens kept | seconds | "
          "peak anon RSS (MB) | growth while loading (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            chars = int(size * fill * CHARS_PER_TOKEN)
            files = write_corpus(Path(tmp) / "texts", chars)
            for way in ["streamed"] + (["old way"] if size in args.old_way else []):
                r = measure("streamed" if way == "streamed" else "old", Path(tmp) / "texts",
                            Path(tmp) / f"artifacts-{way[:3]}")
                growth = r["peak"]["anon"] - r["before"]["anon"]
                print(f"| {size} | {files:,} | {chars / CHARS_PER_TOKEN:,.0f} | {way} | "
                      f"{r['tokens']:,} | {r['seconds']:.1f} | {r['peak']['anon']:.0f} | "
                      f"{growth:.0f} |", flush=True)


if __name__ == "__main__":
    main()
