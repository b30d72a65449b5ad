"""The plain functions that do tdc's work; Celery tasks only call them."""
