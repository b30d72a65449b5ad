"""Storage: tables, shard routing, engines, schema creation, the embedded Redis."""
