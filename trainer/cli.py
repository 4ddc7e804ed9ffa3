"""``streamtrain`` command line (also ``python -m trainer``).

Every command takes the model config; every failure exits non-zero with a one-line reason first.
The commands are thin: each parses its arguments and calls the module that does the work.

Other installed packages add commands through the entry points of :data:`COMMAND_GROUP` (the
Airflow plugin package adds ``demo``); ``trainer`` loads one only to run it, and never imports
those packages by name.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

from trainer.hours import hour_index
from trainer.outcome import INTERRUPTED, exit_code_of
from trainer.process import CommandFailed


def _hour(text: str) -> int:
    try:
        return hour_index(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _planted_term(text: str):
    from trainer.gendata import Planted
    try:
        return Planted.term(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


#: Entry-point group of the commands other packages add: ``name = module:main``, where
#: ``main(argv) -> int`` parses the arguments after the command's name itself.
COMMAND_GROUP = "streamtrain.commands"


def added_commands() -> dict:
    """The commands other installed packages add: name -> entry point (not loaded)."""
    from importlib.metadata import entry_points
    return {ep.name: ep for ep in entry_points(group=COMMAND_GROUP)}


def build_parser(added: dict | None = None) -> argparse.ArgumentParser:
    """The parser of the built-in commands, listing ``added`` ones (default: those installed)."""
    parser = argparse.ArgumentParser(prog="streamtrain", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", required=True, help="model config (TOML or YAML)")
        return p

    p = command("gen-data", "write a synthetic hourly stream (planted model, drift, new ids)")
    p.add_argument("--start", type=_hour, required=True, help="first hour, YYYY-MM-DDTHH (UTC)")
    p.add_argument("--hours", type=int, default=6)
    p.add_argument("--rows-per-hour", type=int, default=20000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--skip", type=_hour, nargs="*", default=[], help="hours left missing")
    p.add_argument("--interaction", type=_planted_term, action="append", default=[],
                   metavar="SLOT_A:SLOT_B:STRENGTH",
                   help="plant strength * <u_a, u_b> between two slots' latent factors (repeatable)")
    p.add_argument("--sequence-effect", type=_planted_term, default=None,
                   metavar="HISTORY:TARGET:STRENGTH",
                   help="redraw list slot HISTORY as target-slot ids; plant strength * best match")
    p.add_argument("--factors", type=int, default=4, help="width of the planted latent factors")
    p.add_argument("--history-len", type=int, default=10, help="a history holds 0..N ids")
    p.add_argument("--bias", type=float, default=None,
                   help="planted logit intercept (default -2.2, CTR ~0.15; -6.3 gives ~0.4 %%)")

    p = command("train", "train one hour (run under mpiexec); stages the new version")
    p.add_argument("--hour", type=_hour, required=True)
    p.add_argument("--force", action="store_true", help="retrain the hour if it is the head")
    p.add_argument("--run-info", type=json.loads, default=None,
                   help="JSON object recorded in the version's meta.json (who ran it)")
    p.add_argument("--claim", default=None,
                   help="token of the launcher's claim on the hour's staging (run-hour passes it)")

    p = command("save", "commit the staged version of an hour")
    p.add_argument("--hour", type=_hour, required=True)
    p.add_argument("--kind", choices=("full", "delta"), help="refuse if the staged kind differs")

    p = command("mark-missing", "record an hour whose partition never landed")
    p.add_argument("--hour", type=_hour, required=True)
    p.add_argument("--reason", default="partition never completed")

    p = command("publish", "append the hour's committed version to the donefile")
    p.add_argument("--hour", type=_hour, required=True)

    p = command("run-hour", "train (launching mpiexec) + save + publish one hour, for debugging")
    p.add_argument("--hour", type=_hour, required=True)
    p.add_argument("--force", action="store_true")

    p = command("chain", "list and verify the committed versions")
    p.add_argument("--verify", action="store_true", help="re-check every checksum and link")
    p.add_argument("--json", action="store_true")

    p = command("predict", "score Parquet rows (labelled or not) with a committed version")
    p.add_argument("--version", default="head", help="head (default), v1, v000001 or 1")
    p.add_argument("--input", required=True,
                   help="a Parquet file, or a folder (a partition): every data file of it, by name")
    p.add_argument("--output", required=True, help="Parquet file written: pred, label")

    p = command("prune", "remove versions that no load needs")
    p.add_argument("--keep-bases", type=int, default=None)

    for name, entry in (added_commands() if added is None else added).items():
        sub.add_parser(name, help=f"from {entry.module} (streamtrain {name} --help)",
                       add_help=False)
    return parser


def whole_line_writes() -> None:
    """Make every line of stdout and stderr leave this process in one ``write``, newline included.

    Under ``PYTHONUNBUFFERED=1`` (Airflow task processes and CI often set it) ``print`` writes its
    text and its newline in two calls; between them mpiexec could forward another rank's line, so
    two ranks' lines became one log line. Lines of up to ``PIPE_BUF`` bytes stay whole in the pipe.
    """
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True, write_through=False)


def main(argv: list[str] | None = None) -> int:
    whole_line_writes()
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv else None
    added = {} if command in _HANDLERS else added_commands()  # not looked up on every rank
    try:
        if command in added:  # its own parser takes the rest
            return int(added[command].load()(argv[1:]) or 0)
        return int(_dispatch(build_parser(added).parse_args(argv)) or 0)
    except KeyboardInterrupt:
        print("streamtrain: error: interrupted", file=sys.stderr)
        return INTERRUPTED
    except CommandFailed as err:  # its output was streamed already: one line, its exit code
        print(f"streamtrain: error: {err.reason}", file=sys.stderr)
        for line in err.details:  # then what the reason leaves out (the failing rank's traceback)
            print(line, file=sys.stderr)
        return err.returncode if err.returncode > 0 else 128 - err.returncode  # killed: 128+sig
    except Exception as err:  # noqa: BLE001 - every failure: one line first, exit non-zero
        print(f"streamtrain: error: {err}", file=sys.stderr)
        if os.environ.get("STREAMTRAIN_TRACEBACK"):
            traceback.print_exc()
        return exit_code_of(err)


def _dispatch(args) -> int:
    from trainer.config import load_config
    cfg = load_config(args.config, check_network=args.command in _RUN_THE_NETWORK)
    handler = _HANDLERS[args.command]
    return handler(cfg, args)


def _gen_data(cfg, args) -> int:
    from trainer.gendata import DEFAULT_BIAS, Planted, generate_hours
    planted = Planted(interactions=tuple(args.interaction), sequence=args.sequence_effect,
                      factors=args.factors, history_len=args.history_len)
    report = generate_hours(cfg, cfg.data_root, args.start, args.hours, args.rows_per_hour,
                            seed=args.seed, skip=tuple(args.skip), planted=planted,
                            bias=DEFAULT_BIAS if args.bias is None else args.bias)
    print(json.dumps(report, default=str) if report is not None else "done")
    return 0


def _train(cfg, args) -> int:
    from trainer.job import run_train
    return run_train(cfg, args.hour, force=args.force, run_info=args.run_info, claim=args.claim)


def _save(cfg, args) -> int:
    from trainer import actions
    print(actions.save(cfg, args.hour, kind=args.kind))
    return 0


def _mark_missing(cfg, args) -> int:
    from trainer import actions
    print(actions.mark_missing(cfg, args.hour, args.reason))
    return 0


def _publish(cfg, args) -> int:
    from trainer import actions
    from trainer.jsonsafe import strict_dumps
    print(strict_dumps(actions.publish(cfg, args.hour)))
    return 0


def _run_hour(cfg, args) -> int:
    from trainer.launch import run_hour
    return run_hour(cfg, args.hour, force=args.force)


def _chain(cfg, args) -> int:
    from trainer import actions
    return actions.chain_command(cfg, verify=args.verify, as_json=args.json)


def _predict(cfg, args) -> int:
    from trainer import actions
    print(actions.predict(cfg, args.version, args.input, args.output))
    return 0


def _prune(cfg, args) -> int:
    from trainer import actions
    print(actions.prune(cfg, keep_bases=args.keep_bases))
    return 0


# commands that run the network check it when the config loads (imports JAX, about a second);
# `train` checks it on its worker ranks, so server ranks and the bookkeeping commands never
# import JAX
_RUN_THE_NETWORK = {"run-hour", "predict"}

_HANDLERS = {
    "gen-data": _gen_data, "train": _train, "save": _save, "mark-missing": _mark_missing,
    "publish": _publish, "run-hour": _run_hour, "chain": _chain, "predict": _predict,
    "prune": _prune,
}
