"""The environment of a server that never reaches out: no telemetry, no update check, no model hub, no share link.

Set before gradio (and huggingface_hub, which reads its switches on import) is imported: :mod:`facekit_serve.web`
calls :func:`offline_environment` first thing. Values the user set are kept.
"""

from __future__ import annotations

import os

OFFLINE_ENVIRONMENT = {
    "GRADIO_ANALYTICS_ENABLED": "False",
    "GRADIO_SHARE": "False",
    "GRADIO_SSR_MODE": "False",
    "GRADIO_MCP_SERVER": "False",
    "GRADIO_RUN_HISTORY": "False",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
}


def offline_environment() -> None:
    """Set :data:`OFFLINE_ENVIRONMENT` where the user has not set those variables."""
    for key, value in OFFLINE_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
