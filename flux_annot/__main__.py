"""`python -m flux_annot` is `flux-annotate`."""

import sys

from flux_annot.cli import main

if __name__ == "__main__":
    sys.exit(main())
