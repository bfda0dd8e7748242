"""How runs execute their steps."""

import dagster as dg


@dg.definitions
def execution() -> dg.Definitions:
    """Each run's steps in one process. The graph is small and most steps load pandas, PyTorch or transformers:
    in a process per step (Dagster's default) each pays those imports again, about 10 s apiece on a laptop CPU."""
    return dg.Definitions(executor=dg.in_process_executor)
