"""Everything that comes in, turned into one shape: a ChangeEvent (CDC) or a BusinessWrite."""
