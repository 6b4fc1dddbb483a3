"""Observability: counters and logging shared by every layer."""
