"""Sphinx configuration of the specnorm_np book: the teaching notebooks, executed, and the API
reference from the numpydoc docstrings. Build with ``make docs`` (see the README).

The build fails on any warning (``-W`` in the Makefile): a notebook cell error, a broken
cross-reference, a missing toctree entry or a malformed docstring.
"""

from __future__ import annotations

import os

project = "specnorm_np"
author = "the specnorm_np authors"
copyright = "2025, the specnorm_np authors"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",

    "numpydoc",
    "sphinx_exercise",
    "sphinx-mathjax-offline",  # MathJax served from _static: the book works without a network
]

# `docs/notebooks` is a symbolic link to the repository's `notebooks/`: the chapters are the
# very notebooks the tests run, executed here with the working directory `notebooks/`.
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**/.ipynb_checkpoints"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
master_doc = "index"

# --- notebook execution: cached, every cell error fails the build -----------------------------
nb_execution_mode = os.environ.get("SPECNORM_NB_EXECUTION", "cache")
# one cache per setting: quick (SPECNORM_NB_QUICK=1, what CI builds) and full outputs never mix
_setting = "quick" if os.environ.get("SPECNORM_NB_QUICK", "0") == "1" else "full"
nb_execution_cache_path = os.path.join(os.path.dirname(__file__), "_build",
                                       f".jupyter_cache-{_setting}")
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

# --- API reference ------------------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the numpydoc sections state the types and shapes
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_validation_checks: set[str] = set()

# Cross-references inside the project must resolve; types of other libraries (numpy, typing)
# have no inventory offline and are not checked.
nitpicky = False

# --- HTML ---------------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = "specnorm_np: spectral norm regularization, by hand"
html_theme_options = {
    "show_navbar_depth": 1,
    "home_page_in_toc": True,
    "use_download_button": True,
}
html_context = {"default_mode": "light"}  # a valid theme mode from the first page on
html_static_path = ["_static"]
html_favicon = "_static/favicon.svg"  # also spares every page a 404 for /favicon.ico
