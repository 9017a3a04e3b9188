"""One benchmark scenario in this process: ``python -m tools.bench NAME --work W --json OUT``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tools.bench import run_scenario, scenario_names


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench")
    parser.add_argument("scenario", choices=scenario_names())
    parser.add_argument("--work", required=True, help="scratch folder (data and outputs)")
    parser.add_argument("--json", required=True, help="where the result goes")
    parser.add_argument("--kwargs", default="{}", help="the scenario's keyword arguments as JSON")
    args = parser.parse_args(argv)
    result = run_scenario(args.scenario, args.work, json.loads(args.kwargs))
    Path(args.json).write_text(json.dumps(result, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
