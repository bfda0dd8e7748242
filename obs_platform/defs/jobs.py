"""Jobs over the asset graph."""

import dagster as dg

MAIN_JOB = "main"
DATA_JOB = "data"
REFRESH_JOB = "refresh"

main_job = dg.define_asset_job(
    MAIN_JOB,
    selection=dg.AssetSelection.all(),
    description="The whole local asset graph, from the landing area to the last asset.",
)

refresh_job = dg.define_asset_job(
    REFRESH_JOB,
    selection=dg.AssetSelection.groups("data", "evaluation"),
    description="The data assets and the evaluation of the newest model (no training): keeps reports current.",
)

data_job = dg.define_asset_job(
    DATA_JOB,
    selection=dg.AssetSelection.groups("data"),
    description="The data assets only: landing area to training files (no training).",
)
