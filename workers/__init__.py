"""Background workers (Celery) and the learning code."""
