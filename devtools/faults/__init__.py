"""The fault suite's tooling (its cases are tests/faults/test_cases.py): the rig, the load
generator, the cases' faults and checks. Only SESSION_IDLE_TIMEOUT and RETRY_TIME_SCALE are
ever overridden, and each result names them."""
