"""A griffe extension for `make docs`: facekit's docstrings cross-reference in Sphinx's roles (``:class:`X```,
``:func:`X```), which mkdocstrings shows as raw text; each becomes inline code of the name (``~`` keeps its last
part, as in Sphinx)."""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension

ROLE = re.compile(r":(?:class|func|meth|data|attr|mod|obj|exc|const):`(~?)([^`]+)`")


def plain(text: str) -> str:
    """``text`` with every Sphinx role as inline code: ``:class:`~facekit.types.Face``` -> ```Face```."""
    return ROLE.sub(lambda m: f"`{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}`", text)


class SphinxRoles(Extension):
    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain(obj.docstring.value)
