"""Jobs over the asset graph."""

import dagster as dg

MAIN_JOB = "main"

main_job = dg.define_asset_job(
    MAIN_JOB,
    selection=dg.AssetSelection.all(),
    description="The whole local asset graph, from the landing area to the last asset.",
)
