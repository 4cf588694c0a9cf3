"""Render ``math`` and ``math_block`` nodes as MathML, written into the pages at build time.

Browsers display MathML natively, so the site needs no script from elsewhere to show
formulas. The conversion is docutils' own LaTeX-to-MathML translator; a formula it cannot
translate is a build warning (an error under ``-W``).
"""
import inspect

from docutils import nodes
from docutils.utils.math import latex2mathml
from sphinx.util import logging

logger = logging.getLogger(__name__)

# docutils 0.21 renamed the flag: `inline=True` (before) became `as_block=False`.
_TAKES_AS_BLOCK = 'as_block' in inspect.signature(latex2mathml.tex2mathml).parameters


def _to_mathml(latex: str, as_block: bool) -> str:
    if _TAKES_AS_BLOCK:
        return latex2mathml.tex2mathml(latex, as_block=as_block)
    return latex2mathml.tex2mathml(latex, inline=not as_block)


def _mathml(translator, node, as_block: bool) -> None:
    latex = node.astext()
    try:
        markup = _to_mathml(latex, as_block)
    except (SyntaxError, ValueError) as error:      # docutils raises either, by version
        logger.warning("cannot render %r as MathML: %s", latex, error, location=node)
        markup = f"<code>{translator.encode(latex)}</code>"
    if as_block:
        translator.body.append(translator.starttag(node, 'div', CLASS='math'))
        translator.body.append(markup + '</div>\n')
    else:
        translator.body.append(translator.starttag(node, 'span', '', CLASS='math'))
        translator.body.append(markup + '</span>')
    raise nodes.SkipNode


def visit_math(translator, node):
    _mathml(translator, node, as_block=False)


def visit_math_block(translator, node):
    _mathml(translator, node, as_block=True)


def setup(app):
    app.add_html_math_renderer('mathml', (visit_math, None), (visit_math_block, None))
    return {'parallel_read_safe': True, 'parallel_write_safe': True}
