"""tdc serve: console pages, the HTTP receiver, /metrics."""
