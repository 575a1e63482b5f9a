"""The web app and REST API (`lookalike serve`): search by dropping an image, browse the
collection, see near duplicates. Needs the ``web`` extra (FastAPI, uvicorn).

Modules: ``app`` (routes only: parse and format), ``schemas`` (response shapes for the
OpenAPI docs), ``service`` (thread-safe access to one Collection), ``uploads`` (checking
query images), ``thumbnails`` (disk cache), ``originals`` (serving image files),
``guards`` (request-level protections), ``static/`` (the page: plain JS, no build step).
"""
