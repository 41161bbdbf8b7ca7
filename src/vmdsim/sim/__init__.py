"""Workloads (interrupt load, hot-plug churn) and what they cost."""
