"""Accounting: the loss ledger, client reports, rejected events kept, the live tail, reports and traces."""
