"""Run `bqemulator` (a local BigQuery REST emulator) for the warehouse tests: `python -m
obs_platform_tests.bigquery_emulator start --rest-port N --grpc-port M --project P`.

One patch: google-cloud-bigquery uploads a small load job's data with the media type `*/*`, which bqemulator 1.4
refuses; BigQuery takes it, so the emulator is made to as well.
"""

import sys

import bqemulator.api.routes.upload as upload
from bqemulator.cli import main

upload._PERMITTED_MEDIA_CONTENT_TYPES = (*upload._PERMITTED_MEDIA_CONTENT_TYPES, "*/*")

if __name__ == "__main__":
    sys.exit(main())
