"""`python -m trainer --mode classifier --train … --valid … --output …` (see `--help`)."""

from __future__ import annotations

import json
import sys

from trainer.config import TrainerConfig


def main(argv: list[str] | None = None) -> int:
    config = TrainerConfig.from_args(argv)
    from trainer.classifier import train_classifier

    summary = train_classifier(config)
    print(json.dumps(summary.get("metrics", summary)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
