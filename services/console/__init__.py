"""The revenue-cycle console: work queues, KPIs and an encounter's story in the browser."""
