"""The paper's comparison as a command line: data, the run grid, tables, figures and the demo.

* :mod:`~specnorm_np.experiments.datasets`: CIFAR-10 subsets or digits, globally contrast-normalized
* :mod:`~specnorm_np.experiments.compare`: the methods x batch sizes x seeds grid (joblib / Dask)
* :mod:`~specnorm_np.experiments.summary`: Table 1 (summary.csv) and the Fig. 2 correlations
* :mod:`~specnorm_np.experiments.plots`: Figs. 1-4
* :mod:`~specnorm_np.experiments.demo`, :mod:`~specnorm_np.experiments.cli`
"""
