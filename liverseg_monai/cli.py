"""Command line: ``python -m liverseg_monai {synth,prepare,demo,bench} ...``.

Errors that liverseg_monai raises on purpose (:class:`liverseg_monai.errors.LiversegError`) are
printed as one line naming the file and the problem, with exit status 2; set
``LIVERSEG_DEBUG=1`` for the full traceback.
"""

from __future__ import annotations

import argparse
import ast
import json
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

    demo = sub.add_parser("demo", help="every bundle end to end on synthetic data; writes OUT/report.md")
    demo.add_argument("--out", default="demo_out")
    demo.add_argument("--bundles", nargs="*", default=None, help="only these bundles")
    demo.add_argument("--set", dest="overrides", action="append", default=[], metavar="STAGE:KEY=VALUE",
                      help="override a config key in one demo stage (VALUE parsed as JSON if it can be), e.g. "
                           "train_tumor:weak_supervision#weight=0; repeatable")

    bench = sub.add_parser("bench", help="benchmarks: merges into OUT/results.json, rewrites docs/benchmarks.md")
    bench.add_argument("--out", default="bench")
    bench.add_argument("--only", default=None, help="comma-separated scenarios (default: the speed group)")
    bench.add_argument("--quality", action="store_true", help="also the quality group (trains every bundle)")
    bench.add_argument("--device", default="cpu", help="cpu or cuda (GPU rows: AMP, channels-last)")
    bench.add_argument("--preset", default="full", choices=["full", "small", "tiny"], help="problem sizes")
    bench.add_argument("--docs", default=None, help="Markdown output (default docs/benchmarks.md)")
    return parser


def _stage_overrides(parser, items: list[str]) -> dict[str, dict]:
    """``["stage:key=value", ...]`` -> ``{stage: {key: value}}`` (values parsed as JSON when possible)."""
    out: dict[str, dict] = {}
    for item in items:
        stage, sep, assignment = item.partition(":")
        key, eq, value = assignment.partition("=")
        if not (sep and eq and stage and key):
            parser.error(f"--set expects STAGE:KEY=VALUE, got {item!r}")
        try:
            value = json.loads(value)
        except ValueError:
            pass
        out.setdefault(stage, {})[key] = value
    return out


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
        elif args.command == "demo":
            from liverseg_monai.demo import run_demo

            if extra:
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
            print(f"wrote {run_demo(args.out, args.bundles, _stage_overrides(parser, args.overrides))}")
        elif args.command == "bench":
            from liverseg_monai.bench import run_bench

            if extra:
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
            command = "python -m liverseg_monai " + " ".join(argv if argv is not None else sys.argv[1:])
            print(f"wrote {run_bench(args.out, args.only, args.quality, args.device, args.preset, args.docs, command=command)}")
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
