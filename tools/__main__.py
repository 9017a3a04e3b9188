"""Command line of the tooling: ``python -m tools {demo,bench,ablation-deeplab,research} ...``.

Errors that liverseg_monai raises on purpose (:class:`liverseg_monai.errors.LiversegError`) are
printed as one line naming the file and the problem, with exit status 2; set
``LIVERSEG_DEBUG=1`` for the full traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import sys

from liverseg_monai.errors import LiversegError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="every bundle end to end on synthetic data; writes OUT/report.md")
    demo.add_argument("--out", default="demo_out")
    demo.add_argument("--bundles", nargs="*", default=None, help="only these bundles")
    demo.add_argument("--set", dest="overrides", action="append", default=[], metavar="STAGE:KEY=VALUE",
                      help="override a config key in one demo stage (VALUE parsed as JSON if it can be), e.g. "
                           "train_tumor:weak_supervision#weight=0; repeatable")

    bench = sub.add_parser("bench", help="benchmarks: merges into OUT/results.json, rewrites docs/benchmarks.md")
    bench.add_argument("--out", default="bench")
    bench.add_argument("--only", default=None, help="comma-separated scenarios (default: the speed group); "
                       "claim:NAME runs one paper's claim (tools/bench/claims.py), 'claims' all of them")
    bench.add_argument("--quality", action="store_true", help="also the quality group (trains every bundle)")
    bench.add_argument("--device", default="cpu", help="cpu or cuda (GPU rows: AMP, channels-last)")
    bench.add_argument("--preset", default="full", choices=["full", "small", "tiny"], help="problem sizes")
    bench.add_argument("--docs", default=None, help="Markdown output (default docs/benchmarks.md)")

    from tools.ablation_deeplab import add_arguments

    add_arguments(sub.add_parser("ablation-deeplab", help="DeepLabV3+ ablation: deformable vs standard ASPP, "
                                 "DINO vs random encoder init, through the bundle's train/evaluate configs"))

    from tools.research import SCRIPTS

    research = sub.add_parser("research", help="a research script of tools/research (arguments passed on)")
    research.add_argument("script", choices=SCRIPTS)
    research.add_argument("args", nargs=argparse.REMAINDER, help="the script's own arguments")
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
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from tools.demo import run_demo

            print(f"wrote {run_demo(args.out, args.bundles, _stage_overrides(parser, args.overrides))}")
        elif args.command == "bench":
            from tools.bench import run_bench

            command = "python -m tools " + " ".join(argv if argv is not None else sys.argv[1:])
            print(f"wrote {run_bench(args.out, args.only, args.quality, args.device, args.preset, args.docs, command=command)}")
        elif args.command == "ablation-deeplab":
            from tools.ablation_deeplab import run_from_args

            run_from_args(args)
        elif args.command == "research":
            sys.argv = [f"tools/research/{args.script}.py", *args.args]
            runpy.run_module(f"tools.research.{args.script}", run_name="__main__", alter_sys=True)
    except LiversegError as err:
        if os.environ.get("LIVERSEG_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
