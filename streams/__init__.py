"""Streams in and out: consumers of message brokers (``streams.consume``), the outbox relay and
event publishing."""
