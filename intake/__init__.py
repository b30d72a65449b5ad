"""Lines in: verdicts stored idempotently, tasks created or bumped."""
