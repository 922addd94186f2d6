"""Observer's dev and test tooling: servers, the stack, the UFSE sink, load, locks.

Importable like the app (the Makefile's .pth file puts the checkout on the venv's path), so
tests and the thin entry points in scripts/ import it and nothing edits ``sys.path``.
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
