"""CDK entry point: ``cdk synth`` runs this (see cdk.json), and so does ``make infra-synth``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from healthpredict_infra.main import main

if __name__ == "__main__":
    raise SystemExit(main())
