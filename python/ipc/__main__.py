"""The command line: list a server's objects, call a method.

    python -m ipc list [ADDR]                      (default localhost:9099)
    python -m ipc call ADDR OBJECT METHOD [ARGS...]

Each argument is read as JSON where it parses (``2``, ``[1, 2]``,
``{"x": 1}``, ``"DivideByZero"``) and as a plain string otherwise; a
``String`` parameter always takes the text as written. The answer is
printed as JSON (bytes as ``0x...`` hex), a stream's items one per line.
Exit status: 0 on success, 1 when the call failed (the method's own error,
or the framework's), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, List, Optional, Sequence

from .client import Stream, connect
from .codec import MethodPlan, Some
from .config import DEFAULT_ADDR
from .errors import AppError, Error


def _plain(value: Any) -> Any:
    """``value`` with what JSON cannot hold made printable."""
    if isinstance(value, Some):
        return _plain(value.value)
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict):
        return {(k if isinstance(k, str) else json.dumps(_plain(k))): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _show(value: Any) -> str:
    return json.dumps(_plain(value), ensure_ascii=False)


def _argument(text: str, kind: str) -> Any:
    """One command-line argument for a parameter of format ``kind``."""
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    if kind in ("Str", "Char") and not isinstance(value, str):
        return text
    if kind in ("Bytes", "Seq") and isinstance(value, str):
        return value.encode("utf-8")
    return value


def _arguments(plan: MethodPlan, texts: Sequence[str]) -> List[Any]:
    kinds = [f.kind for _, f in plan.schema.args]
    if len(texts) != len(kinds):
        raise TypeError(f"{plan.signature()} takes {len(kinds)} argument(s), {len(texts)} given")
    out = []
    for text, (_, fmt) in zip(texts, plan.schema.args):
        kind = fmt.kind
        if kind == "Seq" and fmt.args[0].kind != "U8":
            kind = "List"
        out.append(_argument(text, kind))
    return out


def _list(args: argparse.Namespace) -> int:
    with connect(args.addr, **_options(args)) as client:
        for obj in client.objects():
            print(f"{obj.name} (trait {obj.trait_name}, fingerprint {obj.fingerprint:016x})")
            plans = None
            if args.verbose:
                proxy = client.get_exposed_object(obj.name)
                plans = proxy._state.plans
            for i, m in enumerate(obj.methods):
                flags = [
                    flag
                    for flag, on in (
                        ("oneway", m.oneway),
                        ("idempotent", m.idempotent),
                        ("stream", m.streaming),
                        ("takes objects", m.object_args),
                        ("returns objects", m.object_return),
                    )
                    if on
                ]
                text = plans[i].signature() if plans is not None else m.signature
                print(f"  {text}" + (f"   [{', '.join(flags)}]" if flags else ""))
    return 0


def _call(args: argparse.Namespace) -> int:
    with connect(args.addr, **_options(args)) as client:
        proxy = client.get_exposed_object(args.object)
        try:
            plan = proxy._state.plan(args.method)
        except AttributeError as e:
            print(f"ipc: {e}", file=sys.stderr)
            return 2
        try:
            result = proxy.call(args.method, *_arguments(plan, args.args))
        except (TypeError, ValueError) as e:
            print(f"ipc: {e}", file=sys.stderr)
            return 2
        except AppError as e:
            print(f"error returned by {args.method}: {_show(e.value)}", file=sys.stderr)
            return 1
        if plan.oneway:
            return 0
        if isinstance(result, Stream):
            with result:
                for item in result:
                    print(_show(item), flush=True)
            return 0
        print(_show(result))
    return 0


def _options(args: argparse.Namespace) -> "dict[str, Any]":
    options: "dict[str, Any]" = {"timeout": args.timeout}
    if args.key_file:
        options["key_file"] = args.key_file
    return options


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line; returns the exit status."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--key-file", metavar="PATH", help="the shared authentication key")
    common.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS", help="deadline of each call (60)")
    parser = argparse.ArgumentParser(
        prog="python -m ipc",
        description="List the objects of an ipc server, or call one of their methods.",
        parents=[common],
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", parents=[common], help="list the objects and their methods")
    listing.add_argument("addr", nargs="?", default=DEFAULT_ADDR, help=f"HOST:PORT or unix:PATH ({DEFAULT_ADDR})")
    listing.add_argument("-v", "--verbose", action="store_true", help="show parameter names and types")
    calling = commands.add_parser("call", parents=[common], help="call a method and print its answer")
    calling.add_argument("addr", help="HOST:PORT or unix:PATH")
    calling.add_argument("object", help="the object's name")
    calling.add_argument("method", help="the method's name")
    calling.add_argument("args", nargs="*", help="the arguments: JSON where it parses, else text")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            return _list(args)
        return _call(args)
    except Error as e:
        print(f"ipc: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
