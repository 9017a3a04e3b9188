"""Command line of the library: ``python -m liverseg_monai {synth,prepare} ...``.

The demo, the benchmarks and the experiments are tooling outside the library: ``python -m tools``.

Errors that liverseg_monai raises on purpose (:class:`liverseg_monai.errors.LiversegError`) are
printed as one line naming the file and the problem, with exit status 2; set
``LIVERSEG_DEBUG=1`` for the full traceback.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys

from liverseg_monai.errors import LiversegError


def _value(text: str):
    """Parse ``--opt value`` strings: Python literals (numbers, tuples, lists) or plain strings."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _options(extra: list[str]) -> dict:
    """Turn ``--size 64,64,32 --oblique-deg 20`` into ``{"size": (64, 64, 32), "oblique_deg": 20}``."""
    opts: dict = {}
    key = None
    for tok in extra:
        if tok.startswith("--"):
            if key is not None:
                opts[key] = True
            key = tok[2:].replace("-", "_")
            if "=" in key:
                key, val = key.split("=", 1)
                opts[key] = _value(val)
                key = None
        elif key is None:
            raise SystemExit(f"unexpected argument {tok!r}")
        else:
            opts[key] = _value(tok)
            key = None
    if key is not None:
        opts[key] = True
    return opts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m liverseg_monai", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    from liverseg_monai.data.synth import SYNTHESIZERS

    synth = sub.add_parser("synth", help="write a synthetic, format-faithful dataset with dataset.json")
    synth.add_argument("kind", choices=sorted(SYNTHESIZERS))
    synth.add_argument("--out", required=True, help="output dataset folder")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--n", type=int, default=None, help="number of cases/tiles (generator default if unset)")

    from liverseg_monai.data.prepare import PREPARERS

    prep = sub.add_parser("prepare", help="turn an official dataset layout into DATASET_DIR/dataset.json")
    prep.add_argument("kind", choices=sorted(PREPARERS))
    prep.add_argument("--src", required=True, help="the dataset as downloaded")
    prep.add_argument("--out", required=True, help="the dataset folder to write")
    prep.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        if args.command == "synth":
            from liverseg_monai.data.synth import get_synthesizer

            kwargs = _options(extra)
            if args.n is not None:
                kwargs["n"] = args.n
            path = get_synthesizer(args.kind)(args.out, seed=args.seed, **kwargs)
            print(f"wrote {path}")
        elif args.command == "prepare":
            from liverseg_monai.data.prepare import get_preparer

            path = get_preparer(args.kind)(args.src, args.out, seed=args.seed, **_options(extra))
            print(f"wrote {path}")
    except LiversegError as err:
        if os.environ.get("LIVERSEG_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TypeError as err:
        if "unexpected keyword argument" in str(err) and not os.environ.get("LIVERSEG_DEBUG"):
            print(f"error: {err}", file=sys.stderr)
            return 2
        raise
    return 0
