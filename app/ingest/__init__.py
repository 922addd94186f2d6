"""Pure ingest logic: body reading, batch/event validation and privacy scrubbing."""
