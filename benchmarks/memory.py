"""Peak memory of the streaming builders when the corpus doubles (tiny settings).

Each build runs in a fresh subprocess; a sampler thread records the peak *anonymous* RSS (the
memory a process really holds; memmap pages written to disk are page cache the kernel can drop)
and the peak total RSS. Prints a markdown table.

    python benchmarks/memory.py
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, threading, time
from memdec_helpers import pipeline as P
from memdec_helpers.stages.index import build_index

peak = {"anon": 0, "total": 0}
def rss():
    fields = dict(l.split(":", 1) for l in open("/proc/self/status"))
    return int(fields["RssAnon"].split()[0]) // 1024, int(fields["VmRSS"].split()[0]) // 1024
def sample():
    while True:
        a, t = rss(); peak["anon"] = max(peak["anon"], a); peak["total"] = max(peak["total"], t)
        time.sleep(0.02)
threading.Thread(target=sample, daemon=True).start()
stage, tokens, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
profile = P.setup("tiny", verbose=False, artifacts_dir=root, max_train_tokens=tokens)
P.base(profile, 0); P.corpus(profile)
if stage == "targets":
    store = P.datastore(profile, False); index = P.index(profile, False)
time.sleep(0.1); before = dict(zip(("anon", "total"), rss())); peak.update(before)
if stage == "datastore":
    P.datastore(profile, False)
else:
    P.targets(profile, False)
time.sleep(0.1)
print(json.dumps({"before": before, "peak": peak}))
"""


def measure(stage: str, tokens: int, root: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, stage, str(tokens), root], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    print("| builder | corpus tokens | anon RSS before (MB) | peak anon RSS (MB) | growth during build (MB) |")
    print("|---|---|---|---|---|")
    for stage in ("datastore", "targets"):
        for tokens in (40_000, 80_000):
            with tempfile.TemporaryDirectory() as root:
                if stage == "targets":
                    measure("datastore", tokens, root)
                r = measure(stage, tokens, root)
            growth = r["peak"]["anon"] - r["before"]["anon"]
            print(f"| {stage} | {tokens:,} | {r['before']['anon']} | {r['peak']['anon']} | {growth} |",
                  flush=True)


if __name__ == "__main__":
    main()
