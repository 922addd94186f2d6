"""``scripts/bench``: servers and stacks (``rig``), phases, what they read (``measure``), the
baseline, the runs (``runner``), the grid, the printed ``report``.

Pure logic (``stats``, ``gate``, ``result``) imports nothing but the standard library so the unit
tests in ``tests/unit/devtools/bench`` run in milliseconds. The load generator is ``devtools.load``.
"""
