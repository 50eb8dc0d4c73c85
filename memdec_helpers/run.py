"""`python -m memdec_helpers.run`: the batch runner (cli/run.py), under the name the README gives."""
import sys

from .cli.run import main

if __name__ == "__main__":
    sys.exit(main())
