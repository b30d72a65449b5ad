"""Reconciliation: compare the outputs with their source by bucket checksums, read rows only where
buckets differ, compensate through the normal paths, and report (``tdc reconcile``)."""
