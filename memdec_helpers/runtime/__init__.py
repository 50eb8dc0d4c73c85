"""Things in memory: models, devices, the key hook, scoring, batching, search, kNN-LM,
decoding and the training step. Nothing here reads or writes the artifacts folder."""
