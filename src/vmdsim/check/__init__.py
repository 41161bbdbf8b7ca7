"""The concurrency explorer: strategies over the controlled scheduler, properties, reports."""
