"""Things on disk: one folder per stage under `<artifacts>/<profile>/`, each with a manifest.

`store` holds the rules every stage follows (locks, manifests, atomic writes, memmaps); the other
modules are the stages: corpus (from `sources`), datastore, index, targets (and the neighbours
they can be cut from), log-probs, training runs, and the lessons' recorded results.
"""
