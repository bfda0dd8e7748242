"""Jobs over the asset graph."""

import dagster as dg

MAIN_JOB = "main"
DATA_JOB = "data"

main_job = dg.define_asset_job(
    MAIN_JOB,
    selection=dg.AssetSelection.all(),
    description="The whole local asset graph, from the landing area to the last asset.",
)

data_job = dg.define_asset_job(
    DATA_JOB,
    selection=dg.AssetSelection.groups("data"),
    description="The data assets only: landing area to training files (no training).",
)
