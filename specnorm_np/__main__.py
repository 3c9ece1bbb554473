"""``python -m specnorm_np {demo,compare,plot,gradcheck}`` (see ``experiments/cli.py``)."""

from __future__ import annotations

import sys

from specnorm_np.experiments.cli import main

if __name__ == "__main__":
    sys.exit(main())
