"""Operational pieces of a worker: metrics, logs, consumer lag, progress, start-up."""
