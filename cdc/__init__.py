"""Change data capture from the source database itself: the binlog tail, the source connection, snapshots."""
