"""The parts of ``scripts/bench``: load generator, stack rig, phases, figures, gate, report, chart.

Pure logic (``stats``, ``gate``, ``result``) imports nothing but the standard library so the unit
tests in ``tests/unit/bench`` run in milliseconds; everything that starts or drives processes is
in the other modules and is only exercised by running the bench itself.
"""
