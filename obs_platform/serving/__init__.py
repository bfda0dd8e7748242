"""Serving a registered model: the predictor (library) and the HTTP endpoint around it."""
