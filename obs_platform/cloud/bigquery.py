"""The BigQuery client of the analytics warehouse.

With no endpoint given: Google's, with the environment's credentials (a workload identity, or
`GOOGLE_APPLICATION_CREDENTIALS`). A plain-http endpoint is a loopback emulator (the tests' `bqemulator`): no
credentials, and query results paged over REST, since the Storage Read API the client otherwise reaches for
large results lives at Google only.
"""

from __future__ import annotations

from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery


class _RestPagedClient(bigquery.Client):
    def _ensure_bqstorage_client(self, *args: object, **kwargs: object) -> None:
        return None  # results over REST: the Storage Read API is not at a loopback address


def warehouse_client(project: str, location: str | None = None, api_endpoint: str = "") -> bigquery.Client:
    if not api_endpoint:
        return bigquery.Client(project=project, location=location or None)
    options = ClientOptions(api_endpoint=api_endpoint)
    if api_endpoint.startswith("http://"):
        return _RestPagedClient(
            project=project, location=location or None, credentials=AnonymousCredentials(), client_options=options
        )
    return bigquery.Client(project=project, location=location or None, client_options=options)
