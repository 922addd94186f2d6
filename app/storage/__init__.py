"""Storage adapters: ClickHouse (server or chDB), PostgreSQL and Redis, all pooled."""
