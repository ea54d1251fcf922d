"""Maintenance commands for the repository (run with `python -m mlctr.tools.<name>`)."""
