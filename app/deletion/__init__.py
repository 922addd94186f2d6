"""Deleting a person's data with a receipt (issue 20).

A request (``flask --app app data delete``) is a row of ``deletion_requests`` in PostgreSQL with an
audit trail (``deletion_audit``). It suppresses the person at ingest at once (suppress.py), then the
maintenance job (job.py) moves it through its stages, each timestamped:

``suppressing`` -> ``deleted_hot`` (Redis session state, frozen snapshots, parked retries, dead
letters) -> ``deleted_storage`` (ClickHouse ``ALTER TABLE ... DELETE`` mutations, finished) ->
``downstream_notified`` (a signed notice to UFSE, ``webhook-id: deletion:<id>``) -> ``verified``
(a count of 0 in every store).
"""
