"""Offline and streaming evaluation: production modules never import this package."""
