"""ADS contributions and aggregates in the warehouse, rebuilds."""
