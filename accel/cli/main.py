"""The `accel` command. Each subcommand lives in its own module in this package and exposes
`register(subparsers)`; modules are found here by name, so adding a command touches one file."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import accel
from accel.core.errors import AccelError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="accel", description=accel.__doc__.strip().splitlines()[0])
    parser.add_argument("--version", action="version", version=f"accel {accel.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import accel.cli as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name in ("main",) or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"accel.cli.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except AccelError as exc:
        print(f"accel: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file the command reads or writes (--json, --out, ...): one line
        where = f": {exc.filename}" if exc.filename else ""
        print(f"accel: error: {exc.strerror or exc}{where}\nHINT: check the path and its "
              "permissions", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
