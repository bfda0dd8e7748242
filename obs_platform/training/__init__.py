"""Tuning jobs behind one protocol (local subprocess now, Vertex AI later) and the model registry."""
