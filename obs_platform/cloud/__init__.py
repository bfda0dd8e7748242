"""Tuning on Vertex AI: Gemini supervised tuning and the trainer container as a custom job, behind the
tuning-backend protocol. Nothing here imports a Google SDK until a backend is used."""
