"""The fault-injection suite behind ``scripts/faults``: rig, load, cases, reconciliation, table.

Every case runs Observer at its default settings on servers the suite starts itself (the
process toolkit); only SESSION_IDLE_TIMEOUT and RETRY_TIME_SCALE may be overridden, and each
result names its overrides.
"""
