"""``tdc consume``: Canal and Debezium messages (or business writes) from a message broker,
through the one intake path ``tdc ingest`` uses.

One module per broker holds a ``Source`` (``streams.consume.loop``): RabbitMQ (``rabbitmq``),
Redis Streams (``redis_streams``), NATS JetStream (``nats_jetstream``) and Kafka (``kafka``).
``loop.consume`` drives any of them: a batch of messages is taken in (``take_in``), and only
when intake has committed it is it acknowledged; duplicates are harmless by design."""
