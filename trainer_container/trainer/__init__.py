"""The training entrypoint shared by local runs and Vertex AI custom jobs (`python -m trainer`)."""
