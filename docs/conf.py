"""Sphinx configuration: MyST markdown, the default theme, nothing fetched from the network.

Build with ``tox -e docs`` (warnings are errors). ``_ext/spiff_docs.py`` generates the HTTP API, error-code and
configuration references from the code at each build.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "_ext"))

project = "quart-spiff-messages"
author = "the quart-spiff-messages authors"
copyright = "the quart-spiff-messages authors"
try:
    release = version("quart-spiff-messages")
except PackageNotFoundError:  # building from a checkout without installing: the docs still build
    release = "0"
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx_click",
    "spiff_docs",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated", "_ext", ".gitignore", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# Nothing from the network: no intersphinx, no CDN assets.
html_theme = "alabaster"
html_title = "quart-spiff-messages"
html_theme_options = {
    "description": "BPMN messages into SpiffWorkflow, from any Quart app",
    "fixed_sidebar": True,
    "page_width": "1140px",
    "sidebar_width": "230px",
    "body_max_width": "none",
}
html_extra_path = ["_generated/extra"]  # openapi.json at the site's root
html_static_path = ["_static"]  # custom.css, which the theme loads

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autoclass_content = "both"  # SpiffMessages documents its hooks in __init__
