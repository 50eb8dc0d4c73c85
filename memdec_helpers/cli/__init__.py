"""Command-line entry points: the batch runner (`python -m memdec_helpers.run`) and the torchrun
entry point for data-parallel training (`torchrun -m memdec_helpers.cli.torchrun`)."""
