"""Shared I/O for the tools/synth scripts: JSON lines with errors that name the line, no tracebacks
for user errors."""

import json
import os
import sys


class UserError(Exception):
    """A problem with the user's input or arguments: printed as one line, exit code 1."""


def dumps(obj):
    """The one JSON-lines encoding every synth file uses (so rewrites are byte-identical)."""
    return json.dumps(obj, ensure_ascii=False)


def read_jsonl(path, what="file", allow_blank=False):
    """All lines of a JSON-lines file as Python objects. A malformed line raises UserError naming
    the file and the line number. allow_blank: a blank line yields None instead of an error."""
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file ({what})")
    if os.path.isdir(path):
        raise UserError(f"{path}: is a directory, expected a JSON-lines file ({what})")
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    if allow_blank:
                        rows.append(None)
                        continue
                    raise UserError(f"{path}:{i}: empty line, expected a JSON object ({what})")
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as ex:
                    raise UserError(f"{path}:{i}: invalid JSON at column {ex.colno}: {ex.msg} "
                                    f"({what})") from None
    except UnicodeDecodeError as ex:
        raise UserError(f"{path}: not UTF-8 ({ex.reason} at byte {ex.start}) ({what})") from None
    except OSError as ex:
        raise UserError(f"{path}: cannot read: {ex.strerror} ({what})") from None
    return rows


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(dumps(r))
            f.write("\n")


def write_json(path, obj):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def read_json(path, what="file"):
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file ({what})")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as ex:
        raise UserError(f"{path}:{ex.lineno}: invalid JSON at column {ex.colno}: {ex.msg} "
                        f"({what})") from None
    except (OSError, UnicodeDecodeError) as ex:
        raise UserError(f"{path}: cannot read: {ex} ({what})") from None


def run_main(main):
    """Run main(argv) and turn UserError into 'error: ...' on stderr with exit code 1."""
    try:
        rc = main(sys.argv[1:])
    except UserError as ex:
        print(f"error: {ex}", file=sys.stderr)
        rc = 1
    except BrokenPipeError:
        rc = 0
    except KeyboardInterrupt:
        rc = 130
    sys.exit(rc or 0)
