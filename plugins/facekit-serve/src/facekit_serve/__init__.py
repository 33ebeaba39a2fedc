"""facekit-serve: ``facekit serve``, a local web page for the whole chain (Gradio).

Registers the ``facekit serve`` command through the ``facekit`` entry point ``serve``. Importing this module is cheap:
gradio and the models load when the command runs.
"""

from __future__ import annotations

from typing import Any

from facekit import hookimpl


@hookimpl
def register_commands(app: Any) -> None:
    from facekit_serve.cli import serve

    app.command("serve")(serve)
