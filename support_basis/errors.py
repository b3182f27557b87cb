"""Errors for people: the one place that turns an expected failure into one line on stderr and exit status 2.

The standard every command line of this project follows (README, "Troubleshooting"):

- flags are checked before a model is loaded (and, where possible, before torch is imported);
- an expected failure (bad flag, missing or corrupt file, wrong directory, no CUDA, ...) is ONE line on stderr,
  ``<program>: error: <message>``, naming the input, the value and what to do, with exit status 2, and leaves
  no partial output behind;
- an unexpected exception is not caught: it keeps its traceback;
- ``SUPPORT_BASIS_DEBUG=1`` prints the traceback behind a one-line error too.

Code raises :class:`UserError` (or its subclasses) with a message worded for the person; :func:`cli` wraps a
``main(argv)`` so that such errors become that one line. :class:`ArgumentParser` makes argparse's own errors
(unknown flag, missing value, invalid choice) one line too. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import errno
import functools
import json
import math
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

EXIT_USAGE = 2
EXIT_PIPE = 128 + 13  # SIGPIPE
EXIT_INTERRUPT = 128 + 2  # SIGINT


class UserError(Exception):
    """An expected failure, worded for the person running the command (input, value, what to do)."""


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(text).split())


DEBUG_ENV = "SUPPORT_BASIS_DEBUG"
"""Set to 1 to print the traceback behind every one-line error of a command line (the line still ends it)."""


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def fail(message: str, prog: str | None = None) -> NoReturn:
    """Print ``<prog>: error: <message>`` as one line on stderr and exit with status 2."""
    prog = prog or Path(sys.argv[0]).name or "python"
    print(f"{prog}: error: {one_line(message)}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USAGE)


def cli(main: Callable | None = None, *, prog: str | None = None, resumes: bool = True):
    """Decorate ``main(argv=None)``: a :class:`UserError` (subclasses included) becomes one line on stderr and
    exit status 2; every other exception propagates with its traceback. ``prog`` names the program in the line
    (default: the script's file name); ``resumes=False`` for a command that keeps no finished work (a full disk is
    then not said to resume). A closed standard output is one line before anything runs; one that cannot encode
    a character (``PYTHONIOENCODING=ascii``) writes it as an escape."""
    if main is None:
        return functools.partial(cli, prog=prog, resumes=resumes)

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        if sys.stdout is None:  # `command >&-`: nowhere to print the answers
            fail("the standard output is closed (>&-); give it somewhere to write (a file, a pipe, or /dev/null)",
                 prog)
        if hasattr(sys.stdout, "reconfigure") and (sys.stdout.encoding or "").lower().replace("-", "") != "utf8":
            sys.stdout.reconfigure(errors="backslashreplace")  # a non-ASCII answer never crashes the output
        try:
            result = main(*args, **kwargs)
            sys.stdout.flush()  # here, not at exit: a full disk behind stdout is then this line, not a traceback
            return result
        except UserError as err:
            if debugging():  # the traceback behind the one line, for a developer chasing where it came from
                _print_debug(err)
            fail(str(err), prog)
        except KeyboardInterrupt:
            # Ctrl-C: one line and the shell's status for SIGINT; records and checkpoints written so far stay (the
            # runners and training resume from them)
            if debugging():
                traceback.print_exc()
            print(f"{prog or Path(sys.argv[0]).name or 'python'}: interrupted (Ctrl-C); what was finished and "
                  "written is kept", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_INTERRUPT) from None
        except OSError as err:
            if err.errno == errno.EPIPE and err.filename is None:
                _stdout_broken()  # points stdout at /dev/null, so the flush at exit stays quiet
                # whoever read the output has gone (`| head`): stop quietly with the status of a process that
                # SIGPIPE ended, as Unix tools do; what was finished is kept (records are written as they finish)
                raise SystemExit(EXIT_PIPE) from None
            if err.filename is None and _stdout_broken():
                err.filename = "the standard output"
            message = disk_message(err, resumes)
            if message is None:
                raise
            if debugging():
                _print_debug(err)
            fail(message, prog)

    return wrapper


def _print_debug(err: BaseException) -> None:
    """The traceback of ``err`` and of the error it rewords (``raise ... from None`` hides that one otherwise)."""
    if err.__context__ is not None and err.__suppress_context__:
        traceback.print_exception(err.__context__)
    traceback.print_exception(err)


def _stdout_broken() -> bool:
    """Whether stdout cannot take its pending output; if so, fd 1 is pointed at /dev/null, so that the flush at
    exit does not print a second error (the documented way out of a broken stdout)."""
    try:
        sys.stdout.flush()
        return False
    except OSError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return True


_DISK_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is exceeded",
                errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
                errno.EPERM: "permission denied"}


def disk_message(err: OSError, resumes: bool = True) -> str | None:
    """A full disk, a quota, a read-only file system or a permission refused while writing, as one line naming
    the file and what to do; ``None`` for any other ``OSError`` (a bug or a fault of its own: its traceback
    stays). Files already written stay: records are fsync-ed one by one and outputs are replaced atomically, so
    a rerun resumes where this one stopped."""
    cause = _DISK_ERRORS.get(err.errno)
    if cause is None:
        return None
    where = err.filename or "its output (the standard output or a file it writes)"
    again = ("run the same command again: finished work is kept and resumed" if resumes
             else "run the command again")
    return f"cannot write {where}: {cause}; free space (or pass an output directory you can write) and {again}"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (``prog: error: argument --x: ... (see --help)``), exit status 2."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see --help)", self.prog)


# ----------------------------------------------------------------------------------------------------------------
# Values of flags: argparse types whose errors name the value and the allowed range
# ----------------------------------------------------------------------------------------------------------------


def _range_text(low, high, integer: bool) -> str:
    kind = "an integer" if integer else "a finite number"
    if low is not None and high is not None:
        return f"{kind} in [{low}, {high}]"
    if low is not None:
        return f"{kind} >= {low}"
    if high is not None:
        return f"{kind} <= {high}"
    return kind


def number(low: float | None = None, high: float | None = None, *, integer: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite number (an integer with ``integer``) in ``[low, high]``."""
    want = _range_text(low, high, integer)

    def parse(text: str):
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}; got {text!r}") from None
        if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {want}; got {text!r}")
        return value

    parse.__name__ = "integer" if integer else "number"  # argparse names the type in some messages
    return parse


positive_int = number(1, integer=True)
nonnegative_int = number(0, integer=True)


# ----------------------------------------------------------------------------------------------------------------
# Values that arrive as Python objects (lm-eval's model arguments as text, the demo's widgets as floats): the one
# coercion of each kind, with messages that name the setting, the value and the rule
# ----------------------------------------------------------------------------------------------------------------


def parse_number(value):
    """A number given as text (``"32"``, ``"0.5"``) as int or float; anything else unchanged."""
    if isinstance(value, str):
        for kind in (int, float):
            try:
                return kind(value.strip())
            except ValueError:
                pass
    return value


def whole(value, name: str, minimum: int | None = None) -> int:
    """``value`` as an int: an int, an integral float (``32.0``, as JSON and number widgets send it) or either as
    text; else ``ValueError`` naming ``name``, the value and the rule (``>= minimum`` where given)."""
    got = parse_number(value)
    if isinstance(got, float) and got.is_integer():
        got = int(got)
    if isinstance(got, bool) or not isinstance(got, int) or (minimum is not None and got < minimum):
        raise ValueError(f"{name} must be an integer{'' if minimum is None else f' >= {minimum}'}; got {value!r}")
    return got


def finite(value, name: str, minimum: float | None = None) -> float:
    """``value`` as a finite float (a number or its text); else ``ValueError`` naming ``name``, the value and the
    rule (``>= minimum`` where given)."""
    got = parse_number(value)
    if isinstance(got, bool) or not isinstance(got, (int, float)) or not math.isfinite(got) \
            or (minimum is not None and got < minimum):
        raise ValueError(f"{name} must be a finite number{'' if minimum is None else f' >= {minimum}'}; "
                         f"got {value!r}")
    return float(got)


def utf8_text(text: str, what: str) -> str:
    """``text`` (e.g. a command-line argument, which Python decodes with ``surrogateescape``) if it is valid
    UTF-8, else :class:`UserError` naming ``what`` and the offending byte."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        offset = len(text[: err.start].encode("utf-8", "surrogateescape"))
        raw = text.encode("utf-8", "surrogateescape")
        raise UserError(f"{what} is not valid UTF-8 text (byte 0x{raw[offset]:02x} at byte {offset}); "
                        "pass UTF-8 text (check the terminal's or the file's encoding)") from None
    return text


# ----------------------------------------------------------------------------------------------------------------
# Files: read text, JSON and JSON lines, naming the file (and line) in every error
# ----------------------------------------------------------------------------------------------------------------


def read_text(path: str | Path, what: str = "") -> str:
    """The UTF-8 text of ``path``; a missing, unreadable or non-UTF-8 file is a :class:`UserError`."""
    path = Path(path)
    label = f"{what} {path}".strip()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{label} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"{label} is a directory, not a file") from None
    except OSError as err:
        raise UserError(f"cannot read {label}: {err.strerror or err}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise UserError(f"{label} is not UTF-8 text (byte 0x{data[err.start]:02x} on line {line}); save it as "
                        "UTF-8") from None


def read_json(path: str | Path, what: str = "", *, fix: str = "") -> object:
    """The JSON value in ``path``; invalid JSON is a :class:`UserError` with file, line and column (and ``fix``)."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        label = f"{what} {path}".strip()
        raise UserError(f"{label} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})"
                        + (f"; {fix}" if fix else "")) from None


def read_json_object(path: str | Path, what: str = "", *, fix: str = "") -> dict:
    """Like :func:`read_json`, and the value must be a JSON object."""
    value = read_json(path, what, fix=fix)
    if not isinstance(value, dict):
        label = f"{what} {path}".strip()
        raise UserError(f"{label} holds a JSON {type(value).__name__}, not an object" + (f"; {fix}" if fix else ""))
    return value


def iter_jsonl(path: str | Path, what: str = "", *, fix: str = "") -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for every non-blank line of a JSON-lines file; a line that is not a JSON object
    is a :class:`UserError` naming the file and the line."""
    label = f"{what} {path}".strip()
    for number_, line in enumerate(read_text(path, what).splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{label}, line {number_}: not valid JSON (column {err.colno}: {err.msg})"
                            + (f"; {fix}" if fix else "")) from None
        if not isinstance(value, dict):
            raise UserError(f"{label}, line {number_}: expected a JSON object, got a {type(value).__name__}"
                            + (f"; {fix}" if fix else ""))
        yield number_, value


# ----------------------------------------------------------------------------------------------------------------
# Output locations: checked before any work, created only when there is something to write
# ----------------------------------------------------------------------------------------------------------------


def check_output_dir(path: str | Path, flag: str) -> Path:
    """Check that ``path`` can be (or is) a writable directory WITHOUT creating it; return it.

    A path that is a file, lies under a file, or under a directory this user cannot write is a :class:`UserError`.
    """
    if not str(path).strip():  # Path("") is the current directory: results would land among the user's files
        raise UserError(f"{flag} is empty; name a directory (it is created if missing)")
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file; pass a directory (it is created if missing)")
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{flag} {path}: {existing} is a file, so the directory cannot be created; pass another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: {existing} is not writable by this user; pass a directory you can write")
    return path
