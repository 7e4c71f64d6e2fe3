"""Argument parsing, dispatch, exit codes and error reporting of the admin CLI."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from taskiq_abort.cli import web
from taskiq_abort.cli.commands import run
from taskiq_abort.cli.connect import ENV_URL, CLIError, scrub
from taskiq_abort.errors import TaskiqAbortError

EXIT_NOT_ALL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_COMMANDS = ("ls", "status", "rules", "web")

_DESCRIPTION = """\
Abort TaskIQ tasks, queued or running, on whichever worker process holds them;
list the running tasks; show what became of one task.

  %(prog)s TASK_ID [TASK_ID ...]       abort these tasks
  %(prog)s --name TASK_NAME [--yes]    abort every running task named TASK_NAME
  %(prog)s --label NAME=VALUE [--yes]  abort by indexed label, and refuse later starts
  %(prog)s ls [--name N] [--worker W]  list running tasks (%(prog)s ls --help)
  %(prog)s status TASK_ID              running where / abort requested / not known
  %(prog)s rules [--cancel RULE_ID]    the abort rules in force (--label, cascades)
  %(prog)s web --broker M:B --token T  the operator API and dashboard (extra `web`)
"""

_EPILOG = f"""\
where to connect:
  --broker module:broker loads your application's broker the way `taskiq worker`
  does and uses its AbortMiddleware (Redis URL, prefix, timeout) and its result
  backend, so a revoked task's result is stored at once. With only --redis-url
  (or ${ENV_URL}) there is no result backend: a revoked task
  gets its result when a worker picks it up, and a task that already finished
  is reported revoked (nothing can tell it apart from a queued one).

outcomes:
  aborted      it was running; its worker cancelled it and confirmed
  revoked      it was not running; it will never start
  finished     it already had a result; nothing changed (needs --broker)
  unconfirmed  a worker holds it but did not confirm in time (or --no-wait)

exit status:
  0    every task was aborted or revoked (ls: listed; status: the task is known)
  1    some task had finished or stayed unconfirmed, or the confirmation was
       declined (status: the task is not known)
  2    usage error or invalid task id (nothing sent), Redis unreachable, broker
       not loadable, a bare --name that several modules' tasks have
  130  interrupted (Ctrl-C); abort requests already sent stay recorded
  a reader that stops early (`ls | head`) does not change the status
"""


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, not {text}")
    return value


def _common() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--redis-url",
        metavar="URL",
        help=f"Redis of the abort control plane (default: ${ENV_URL}); no result backend",
    )
    group.add_argument(
        "--broker",
        metavar="MODULE:BROKER",
        help="load the app's broker (or a factory function) and use its AbortMiddleware "
        "and result backend; the current directory is importable",
    )
    group.add_argument(
        "--prefix",
        help="key prefix (default: the broker's AbortMiddleware, else 'taskiq_abort')",
    )
    group.add_argument(
        "--cluster", action="store_true", help="--redis-url is a node of a Redis Cluster"
    )
    group.add_argument(
        "--sentinel",
        metavar="HOST:PORT[,HOST:PORT...]",
        help="Redis Sentinels that manage the control plane's master (with --master-name)",
    )
    group.add_argument("--master-name", metavar="NAME", help="the master's name in Sentinel")
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="JSON output, one object per line")
    out.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    return parser


def build_parsers(prog: str) -> dict[str, argparse.ArgumentParser]:
    """The parser of the abort command (``""``) and of each subcommand."""
    fmt = argparse.RawDescriptionHelpFormatter
    common = _common()
    abort = argparse.ArgumentParser(
        prog=prog,
        usage=f"{prog} [options] TASK_ID [TASK_ID ...] | --name NAME | ls | status | rules | web",
        description=_DESCRIPTION % {"prog": prog},
        epilog=_EPILOG % {"prog": prog},
        formatter_class=fmt,
        parents=[common],
        allow_abbrev=False,
    )
    abort.add_argument("task_ids", nargs="*", metavar="TASK_ID", help="ids of the tasks to abort")
    opts = abort.add_argument_group("abort")
    opts.add_argument("--reason", help="stored in the task's TaskAbortedError")
    opts.add_argument(
        "--timeout",
        type=_non_negative,
        metavar="SECONDS",
        help="how long to wait for a worker's confirmation (default: the middleware's, 5)",
    )
    opts.add_argument(
        "--grace",
        type=_non_negative,
        metavar="SECONDS",
        help="let a running task stop on its own (its AbortToken is set at once) for this "
        "long before it is cancelled; 'aborted (forced)' when it had to be",
    )
    opts.add_argument(
        "--no-wait",
        action="store_true",
        help="do not wait for confirmations: running tasks are reported unconfirmed",
    )
    opts.add_argument(
        "--name",
        metavar="TASK_NAME",
        help="abort every running task with this name: module:function as taskiq names it, "
        "or the bare function name if one module has it (queued tasks cannot be listed)",
    )
    opts.add_argument(
        "--label",
        action="append",
        metavar="NAME=VALUE",
        help="abort every running task with this indexed label (repeat: all of them; with "
        "--name, of that name only) and record an abort rule that refuses the matching tasks "
        "at their start until it expires (AbortMiddleware(index_labels=...) on the workers)",
    )
    opts.add_argument(
        "--ttl",
        type=float,
        metavar="SECONDS",
        help="with --label: how long the rule refuses matching starts (default: request_ttl)",
    )
    opts.add_argument(
        "--cascade",
        action="store_true",
        help="with task ids: also abort every task they fanned out (running or queued)",
    )
    opts.add_argument("-y", "--yes", action="store_true", help="do not ask before a bulk abort")
    opts.add_argument(
        "--metrics",
        metavar="FILE",
        help="write this run's abort_requests_total and abort_request_seconds to FILE in "
        "Prometheus text format, e.g. for node_exporter's textfile collector (needs the "
        "'metrics' extra)",
    )

    ls = argparse.ArgumentParser(
        prog=f"{prog} ls",
        description="List the tasks running on live workers, grouped by worker.",
        epilog="exit status: 0 listed (also when nothing runs, or when the reader stops "
        "early, as `ls | head` does), 2 Redis unreachable or usage, 130 interrupted",
        parents=[common],
        allow_abbrev=False,
    )
    ls.add_argument(
        "--name", metavar="TASK_NAME", help="only tasks with this name (full or bare, as --name)"
    )
    ls.add_argument("--worker", metavar="ID", help="only this worker (its id, or a prefix of it)")
    ls.add_argument(
        "--label",
        action="append",
        metavar="NAME=VALUE",
        help="only tasks with this indexed label (repeat: all of them)",
    )

    status = argparse.ArgumentParser(
        prog=f"{prog} status",
        description="Show where a task runs, whether an abort was requested and how it ended.",
        epilog="exit status: 0 the task is known, 1 it is not, 2 usage or Redis unreachable, "
        "130 interrupted",
        parents=[common],
        allow_abbrev=False,
    )
    status.add_argument("task_id", metavar="TASK_ID")

    rules = argparse.ArgumentParser(
        prog=f"{prog} rules",
        description="List the abort rules in force (recorded by --label, abort_where() and "
        "cascades: each refuses the matching tasks at their start until it expires), or "
        "cancel some before they expire.",
        epilog="exit status: 0 listed (also when there is none) or every rule cancelled, "
        "1 some rule was not found (expired, or cancelled already), 2 invalid rule id, Redis "
        "unreachable or usage, 130 interrupted",
        parents=[common],
        allow_abbrev=False,
    )
    rules.add_argument(
        "--cancel",
        nargs="+",
        default=[],
        metavar="RULE_ID",
        help="remove these rules: matching tasks that start from now on run (tasks it "
        "already stopped stay stopped)",
    )
    parsers = {"": abort, "ls": ls, "status": status, "rules": rules}
    return {**parsers, "web": web.build_parser(prog)}


def _split_command(argv: list[str], parsers: dict[str, argparse.ArgumentParser]) -> str:
    """The subcommand named by the first positional argument, or ``""`` (abort)."""
    takes_value = {
        option
        for parser in parsers.values()
        for action in parser._actions
        if action.nargs != 0
        for option in action.option_strings
    }
    skip = False
    for index, token in enumerate(argv):
        if skip:
            skip = False
        elif token == "--":  # everything after it is a task id, even "ls"
            return ""
        elif token.startswith("-") and token != "-":
            skip = "=" not in token and token in takes_value
        else:
            if token in _COMMANDS:
                del argv[index]
                return token
            return ""
    return ""


def main(argv: Sequence[str] | None = None, *, prog: str = "taskiq-abort") -> int:
    """Run the CLI; returns the exit status (see ``--help``)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parsers = build_parsers(prog)
    command = _split_command(args_list, parsers)
    parser = parsers[command]
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # --help, or a usage error argparse already reported
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    args.command = command
    _setup_logging(args.debug)
    url = getattr(args, "redis_url", None) or os.environ.get(ENV_URL)
    try:
        if command == "" and not args.task_ids and args.name is None and not args.label:
            parser.error(
                "give task ids to abort, --name TASK_NAME, --label NAME=VALUE, or a command "
                "(ls, status, rules, web)"
            )
        if command == "" and args.task_ids and (args.name is not None or args.label):
            parser.error("give task ids or --name/--label, not both")
        if command == "" and args.cascade and not args.task_ids:
            parser.error("--cascade goes with task ids")
        if command == "web":
            return web.run(args, prog)
        return asyncio.run(run(args))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except BrokenPipeError:  # a write that bypassed commands.out(), which absorbs these
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_NOT_ALL
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (CLIError, TaskiqAbortError, ValueError, OSError) as exc:
        return _fail(prog, exc, url, args.debug)
    except Exception as exc:  # a bug, or an exception from the application's broker module
        return _fail(prog, exc, url, args.debug, unexpected=True)


def _fail(
    prog: str, exc: BaseException, url: str | None, debug: bool, unexpected: bool = False
) -> int:
    if debug:
        traceback.print_exc()
    message = " ".join(str(exc).split()) or type(exc).__name__
    if unexpected:
        message = f"{type(exc).__name__}: {message}"
    print(f"{prog}: error: {scrub(message, url)}", file=sys.stderr)
    return EXIT_USAGE


def _setup_logging(debug: bool) -> None:
    if debug:
        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(name)s: %(message)s")
    else:
        # Reconnect warnings of the reply subscription are noise for a one-shot command;
        # a failure reaches the user as one error line instead.
        logging.getLogger("taskiq_abort").setLevel(logging.CRITICAL)
