"""Interoperability with session formats of other ecosystems.

Each format lives in its own module, imported on demand:

- :mod:`donjon.compat.iron`: ``Fe26.2`` seals of @hapi/iron (and yar's cookies).
- :mod:`donjon.compat.express`: express-session cookies and connect-redis records.
"""
