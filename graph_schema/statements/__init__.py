"""Cypher statements, one module per concern. Every Statement here is walked by the lint test."""
