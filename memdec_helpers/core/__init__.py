"""The method itself, as pure torch/numpy: no disk, no Profile, no transformers.

Start here when a lesson says "the code behind this":
- `knn`: the kNN next-token distribution p_kNN (softmax(-d/tau) votes, equal tokens summed);
- `targets`: sparse top-m training targets, the query's own entry dropped *by position*;
- `loss`: the Memory Decoder's loss, beta * KL(p_kNN || p_Mem) + (1 - beta) * CE;
- `mixing`: mixing two models in log space, perplexity, weight sweeps;
- `windows`: sliding windows that score every token exactly once;
- `search`: exact nearest-neighbour search (chunked matmul + top-k, float32 re-rank);
- `results`: the results table and the paper's relations;
- `hashing`: short content hashes (the identity of inputs in manifests).
"""
