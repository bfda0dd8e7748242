"""`python -m trainer --mode classifier|sft --train … --valid … --output …` (see `--help`)."""

from __future__ import annotations

import json
import sys

from trainer.config import TrainerConfig


def main(argv: list[str] | None = None) -> int:
    config = TrainerConfig.from_args(argv)
    if config.mode == "sft":
        from trainer.sft import train_sft as train
    elif config.recipe == "hybrid":
        from trainer.hybrid import train_hybrid as train
    else:
        from trainer.classifier import train_classifier as train

    summary = train(config)
    print(json.dumps(summary.get("metrics", summary)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
