"""``python -m specnorm_np.bench``: see :mod:`specnorm_np.bench`."""

from specnorm_np.bench.report import main

raise SystemExit(main())
