"""Sphinx configuration of the bp_conv_ext documentation (`make docs`).

The build reads nothing from the network: no intersphinx, the built-in alabaster theme,
formulas rendered to MathML at build time, and figures made by the examples just before it
(`make docs` writes them to docs/_build/figures).
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '_ext'))
sys.path.insert(0, os.path.dirname(HERE))          # the package, also when not installed

from sphinx.pycode import ModuleAnalyzer  # noqa: E402

import bp_conv_ext  # noqa: E402

project = 'bp_conv_ext'
author = 'the bp_conv_ext authors'
copyright = 'the bp_conv_ext authors; Apache-2.0'
release = version = bp_conv_ext.__version__

extensions = [
    'myst_parser',
    'sphinx.ext.autodoc',
    'sphinx.ext.napoleon',
    'sphinx.ext.doctest',
    'sphinx.ext.viewcode',
    'mathml',
    'measured',
]

source_suffix = {'.md': 'markdown'}
root_doc = 'index'
exclude_patterns = ['_build']

# -- API reference -----------------------------------------------------------------------------
# NumPy-style docstrings (BrainPy's convention).
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
autodoc_member_order = 'bysource'
# The docstrings state every type; the annotations would repeat them at length.
autodoc_typehints = 'none'
# Defaults as written in the source, not as the repr of the object they evaluate to.
autodoc_preserve_defaults = True

# Private module-level defaults of Conv1d, shown by what they are.
_DEFAULTS_SHOWN_AS = {
    '_DEFAULT_W_INIT': 'bp.init.XavierNormal()',
    '_DEFAULT_B_INIT': 'bp.init.ZeroInit()',
}


def _public_defaults(app, what, name, obj, options, signature, return_annotation):
    if signature:
        for private, shown in _DEFAULTS_SHOWN_AS.items():
            signature = signature.replace(private, shown)
    return signature, return_annotation


# -- Doctests ----------------------------------------------------------------------------------
# `>>>` examples in the docstrings (doctest blocks) and the pages' {doctest} and
# {testcode}/{testoutput} blocks all run under `sphinx-build -b doctest`.
doctest_test_doctest_blocks = 'default'

# -- HTML --------------------------------------------------------------------------------------
html_theme = 'alabaster'
html_title = f'bp_conv_ext {release}'
html_theme_options = {
    'description': 'A 1-D convolution layer for spiking neural networks in BrainPy',
    'fixed_sidebar': True,
    'show_relbars': True,
    # A wider page than the theme's 940px: the code blocks' lines and the tables' columns fit
    # at a desktop width (docs/_static/custom.css makes anything wider scroll in its box).
    'page_width': '1180px',
    'body_max_width': 'none',
}
html_static_path = ['_static']
html_css_files = ['custom.css']
html_sidebars = {'**': ['about.html', 'navigation.html', 'relations.html', 'searchbox.html']}
html_math_renderer = 'mathml'
html_show_sourcelink = False


def _source_comment(app, what, name, obj, options, lines):
    """A re-exported constant gets the ``#:`` comment written where it is defined.

    autodoc looks for that comment in the module it documents the name under
    (``bp_conv_ext``), finds none and falls back to the docstring of the value's type;
    this looks in the package's inner modules instead.
    """
    if what != 'data' or not name.startswith('bp_conv_ext.'):
        return
    attr = name.rsplit('.', 1)[1]
    for module_name, module in sorted(sys.modules.items()):
        if module_name.count('.') >= 2 and module_name.startswith('bp_conv_ext.') and \
                getattr(module, attr, None) is obj:
            comment = ModuleAnalyzer.for_module(module_name).find_attr_docs().get(('', attr))
            if comment:
                lines[:] = list(comment)
                return


def setup(app):
    app.connect('autodoc-process-signature', _public_defaults)
    app.connect('autodoc-process-docstring', _source_comment)
