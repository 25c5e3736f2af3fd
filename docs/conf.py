"""Sphinx configuration for the Flask-Offload documentation.

The build must work offline and without warnings (``make docs`` runs
``sphinx-build -W``), so nothing here reaches the network: no intersphinx
inventories, no extlinks, no version banner.
"""

from __future__ import annotations

from pallets_sphinx_themes import get_version

# Project --------------------------------------------------------------

project = "Flask-Offload"
copyright = "2026 Flask-Offload contributors"
author = "Flask-Offload contributors"
release, version = get_version("Flask-Offload")

# General --------------------------------------------------------------

default_role = "code"
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "pallets_sphinx_themes",
]
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_member_order = "bysource"
autodoc_preserve_defaults = True
exclude_patterns = ["_build"]

# HTML -----------------------------------------------------------------

html_theme = "flask"
html_theme_options = {"index_sidebar_logo": False}
html_sidebars = {
    "index": ["localtoc.html", "searchbox.html"],
    "**": ["localtoc.html", "relations.html", "searchbox.html"],
}
singlehtml_sidebars = {"index": ["localtoc.html"]}
html_title = f"Flask-Offload Documentation ({version})"
html_show_sourcelink = False
# The Pallets theme adds a script that asks PyPI for the latest release.
version_banner = False
