"""Celery tasks: each receives keys (JSON), calls a plain function in the rooms below (``intake``,
``chain``, ``reliability``, ...), and leaves retries to its decorator.  Names are stable; queues
and routes live in worker.py."""
