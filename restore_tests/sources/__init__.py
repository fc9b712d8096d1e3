"""Where a backup comes from. Each source turns a scenario's `source` section into data on disk."""
