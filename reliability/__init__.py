"""Leases and fencing, transient-fault retry, rescans, failures, alarms, housekeeping."""
