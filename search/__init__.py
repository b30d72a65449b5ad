"""Order search: one query object for Elasticsearch and for the SQL fallback over the wide rows."""
