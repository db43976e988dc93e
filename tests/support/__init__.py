"""Helpers the tests and make targets share: stand-ins in the real formats, a JupyterLab server, student runs."""
