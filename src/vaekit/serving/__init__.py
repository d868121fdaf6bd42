"""Serving a trained model: the HTTP API with its latent explorer page, and ONNX export.

::

    service.py   Service: what each request means, checked and answered by one library call (no web framework)
    http.py      create_app() / serve(): the FastAPI app around the service, limits, error answers, pages
    onnx.py      export(): the encoder and decoder as ONNX files, checked against onnxruntime
    static/      the latent explorer (HTML, JS, CSS)
"""

from vaekit.serving.http import create_app, serve
from vaekit.serving.onnx import export
from vaekit.serving.service import Limits

__all__ = ["Limits", "create_app", "export", "serve"]
