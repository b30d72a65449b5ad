"""Celery tasks: each receives keys (JSON), calls a plain function in ``pipeline``, and
leaves retries to its decorator.  Names are stable; queues and routes live in worker.py."""
