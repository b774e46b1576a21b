"""The ``tfrs-diag`` command line: it parses arguments and dispatches, nothing else.

Usage::

    tfrs-diag demo [--data-dir DIR] [--logdir DIR] [--epochs N] [--seed N]
    tfrs-diag report LOGDIR [--fail-on never|info|warning|critical]
    tfrs-diag explain [--method NAME] [--examples N] [--data-dir DIR] [--logdir DIR]

``demo`` trains the two-tower retrieval model of ``examples/movielens_retrieval.py``
with every diagnostic tfrs_diag has, prints what they found and the ``tensorboard``
command that shows the logs. The training is `tfrs_diag.recipes`'s, the text
`tfrs_diag.views.report`'s.

Adding a subcommand (``report LOGDIR``, ``explain``): write ``_<name>_arguments(parser)``
and ``cmd_<name>(args) -> int`` and add one `Command` entry to `COMMANDS`. A handler
raises `UsageError` for bad input: `main` prints it as one line and returns 2.

Not run here: these lines train a model or read a training run's log directory (tests/test_cli_examples.py runs them).

>>> main(["--version"])  # doctest: +SKIP
tfrs-diag 0.1.0
0
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import sys
from typing import Callable, Sequence

from tfrs_diag.recipes import (
    UsageError,
    check_data_args,
    check_logdir,
    non_negative_int,
    positive_int,
)

PROG = "tfrs-diag"


def _say(message: str) -> None:
    print(message, flush=True)


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", metavar="DIR",
                   help="MovieLens-100k directory (u.data, u.item, u.user); default: synthetic data")
    p.add_argument("--logdir", metavar="DIR", default="demo_logs",
                   help="TensorBoard log directory; each demo adds a run demo-<time> in it (default: %(default)s)")
    p.add_argument("--epochs", metavar="N", type=positive_int, default=3, help="epochs (default: %(default)s)")
    p.add_argument("--seed", metavar="N", type=non_negative_int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--num-interactions", metavar="N", type=positive_int,
                   help="size of the synthetic data set (default: 40000)")
    p.add_argument("--batch-size", metavar="N", type=positive_int, default=1024,
                   help="batch size (default: %(default)s)")
    # Cadence of the diagnostics: suited to the short demo run; hidden, for tests.
    p.add_argument("--every-n-steps", type=positive_int, default=10, help=argparse.SUPPRESS)
    p.add_argument("--histogram-every-n-steps", type=positive_int, default=50, help=argparse.SUPPRESS)


def _new_run_dir(logdir: str, prefix: str = "demo") -> str:
    """A fresh run directory ``<logdir>/<prefix>-<time>`` so repeated runs sit side by side."""
    check_logdir(logdir)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    run, n = os.path.join(logdir, f"{prefix}-{stamp}"), 1
    while os.path.exists(run):
        n += 1
        run = os.path.join(logdir, f"{prefix}-{stamp}-{n}")
    return run


def cmd_demo(args: argparse.Namespace) -> int:
    """Trains the retrieval example with every diagnostic and prints what they found."""
    from tfrs_diag import recipes
    from tfrs_diag.views import report

    check_data_args(args.data_dir, args.num_interactions)
    demo = recipes.run_demo(_new_run_dir(args.logdir), data_dir=args.data_dir, num_interactions=args.num_interactions,
                            epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                            every_n_steps=args.every_n_steps, histogram_every_n_steps=args.histogram_every_n_steps,
                            say=_say)
    _say("\n".join(report.demo_lines(demo, batch_size=args.batch_size, logdir=os.path.abspath(args.logdir))))
    return 0


def _report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("logdir", metavar="LOGDIR", help="TensorBoard log directory (every run under it is reported)")
    p.add_argument("--fail-on", choices=("never", "info", "warning", "critical"), default="never",
                   help="exit with 1 when an alert of this severity or worse is still firing (default: %(default)s)")


def cmd_report(args: argparse.Namespace) -> int:
    """Prints the alerts and tables of every run under LOGDIR (what the TensorBoard plugin shows)."""
    from tfrs_diag.views import report

    try:
        lines, alerts = report.report_lines(args.logdir, verbose=int(sys.stderr.isatty()))
    except FileNotFoundError:
        raise UsageError(f"LOGDIR: {args.logdir!r} is not a directory; pass the --logdir you trained with") from None
    if lines:  # the runs, and what could not be read
        _say("\n".join(lines).lstrip("\n"))
    if not any(line.startswith(report.RUN_HEADING) for line in lines):
        print(f"{PROG} report: error: no tfrs_diag data under {args.logdir!r}; add tfrs_diag callbacks with "
              "log_dir inside it", file=sys.stderr)
        return 1
    if args.fail_on != "never":
        bad = report.firing(alerts, args.fail_on)
        if bad:
            _say(f"\n{len(bad)} alert(s) of severity {args.fail_on} or worse still firing (--fail-on {args.fail_on})")
            return 1
    return 0


def _explain_arguments(p: argparse.ArgumentParser) -> None:
    from tfrs_diag.explain import METHODS

    p.add_argument("--data-dir", metavar="DIR",
                   help="MovieLens-100k directory (u.data, u.item, u.user); default: synthetic data")
    p.add_argument("--num-interactions", metavar="N", type=positive_int,
                   help="size of the synthetic data set (default: 10000)")
    p.add_argument("--method", choices=sorted(METHODS), default="shapley", help="attribution method (default: %(default)s)")
    p.add_argument("--examples", metavar="N", type=positive_int, default=5,
                   help="test examples to explain (default: %(default)s)")
    p.add_argument("--background", metavar="N", type=positive_int, default=50,
                   help="background rows from train (default: %(default)s)")
    p.add_argument("--epochs", metavar="N", type=positive_int, default=2, help="epochs (default: %(default)s)")
    p.add_argument("--seed", metavar="N", type=non_negative_int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--logdir", metavar="DIR",
                   help="also write the training logs and the attributions here (run explain-<time>)")


def cmd_explain(args: argparse.Namespace) -> int:
    """Trains the demo ranking model and prints the attributions of a few test examples."""
    import tempfile

    from tfrs_diag import recipes
    from tfrs_diag.views import report

    check_data_args(args.data_dir, args.num_interactions)
    with tempfile.TemporaryDirectory() as scratch:
        found = recipes.run_explain(
            _new_run_dir(args.logdir, prefix="explain") if args.logdir else scratch, method=args.method,
            examples=args.examples, background=args.background, data_dir=args.data_dir,
            num_interactions=args.num_interactions, epochs=args.epochs, seed=args.seed,
            write=bool(args.logdir), say=_say)
    _say("\n".join(report.explain_lines(found, logdir=args.logdir)))
    return 0


@dataclasses.dataclass(frozen=True)
class Command:
    """A subcommand: one-line help, argument set-up and the handler (returns the exit code)."""

    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {
    "demo": Command("train a small two-tower model with every diagnostic and show what they found",
                    _demo_arguments, cmd_demo),
    "report": Command("print the alerts and tables of every run under a log directory (no browser needed)",
                      _report_arguments, cmd_report),
    "explain": Command("train the demo ranking model and print feature attributions of a few test examples",
                       _explain_arguments, cmd_explain),
}


class _Parser(argparse.ArgumentParser):
    """Reports bad arguments in one line (with where to find help) and exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Training diagnostics for TensorFlow Recommenders.")
    from tfrs_diag import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help[0].upper() + command.help[1:] + ".")
        command.arguments(p)
        p.set_defaults(handler=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``tfrs-diag`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, bad arguments
        return e.code if isinstance(e.code, int) else 2
    try:
        return args.handler(args)
    except UsageError as e:
        print(f"{PROG} {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
