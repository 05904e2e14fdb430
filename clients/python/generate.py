#!/usr/bin/env python3
"""Regenerates the committed gRPC stubs of fintoc_refresh_client from the proto.

    python generate.py           rewrite fintoc_refresh_client/_proto/refresh_pb2*.py(i)
    python generate.py --check   regenerate into a temporary folder and fail (exit 1,
                                 with a diff) if the committed stubs differ

Needs the grpcio-tools pinned in requirements-dev.txt: another version writes other
bytes (and other runtime version checks), so CI's freshness check would fail.

The proto (proto/fintoc/refresh/v1/refresh.proto, two folders up) imports only
google/protobuf/timestamp.proto, which grpcio-tools ships. protoc writes
`from fintoc.refresh.v1 import refresh_pb2`; that import is rewritten to the package's own
`from . import refresh_pb2`, so the stubs live inside the package and import cleanly.
"""

import difflib
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))
PROTO = "fintoc/refresh/v1/refresh.proto"
OUT = os.path.join(HERE, "fintoc_refresh_client", "_proto")
FILES = ("refresh_pb2.py", "refresh_pb2.pyi", "refresh_pb2_grpc.py")
GENERATED_IMPORT = "from fintoc.refresh.v1 import refresh_pb2 as"
PACKAGE_IMPORT = "from . import refresh_pb2 as"


def generate(into):
    """Writes the three stub files into the folder `into`."""
    try:
        from grpc_tools import protoc
        import grpc_tools
    except ImportError:
        sys.exit("generate.py needs grpcio-tools: pip install -r requirements-dev.txt")
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    with tempfile.TemporaryDirectory() as raw:
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{PROTO_ROOT}",
                f"-I{include}",
                f"--python_out={raw}",
                f"--pyi_out={raw}",
                f"--grpc_python_out={raw}",
                os.path.join(PROTO_ROOT, PROTO),
            ]
        )
        if code != 0:
            sys.exit(f"protoc failed (exit {code})")
        produced = os.path.join(raw, os.path.dirname(PROTO))
        for name in FILES:
            with open(os.path.join(produced, name), encoding="utf-8") as f:
                text = f.read()
            if name == "refresh_pb2_grpc.py":
                if GENERATED_IMPORT not in text:
                    sys.exit(f"unexpected protoc output: no {GENERATED_IMPORT!r} in {name}")
                text = text.replace(GENERATED_IMPORT, PACKAGE_IMPORT)
            with open(os.path.join(into, name), "w", encoding="utf-8", newline="\n") as f:
                f.write(text)


def check():
    """Exit 1 with a diff when the committed stubs are not what generate() writes now."""
    stale = False
    with tempfile.TemporaryDirectory() as fresh:
        generate(fresh)
        for name in FILES:
            with open(os.path.join(fresh, name), encoding="utf-8") as f:
                want = f.read()
            committed = os.path.join(OUT, name)
            have = ""
            if os.path.exists(committed):
                with open(committed, encoding="utf-8") as f:
                    have = f.read()
            if have != want:
                stale = True
                sys.stdout.writelines(
                    difflib.unified_diff(
                        have.splitlines(True),
                        want.splitlines(True),
                        f"committed/{name}",
                        f"regenerated/{name}",
                    )
                )
    if stale:
        print(
            "clients/python stubs are stale: run `python clients/python/generate.py` "
            "(with requirements-dev.txt installed) and commit them",
            file=sys.stderr,
        )
        sys.exit(1)
    print("clients/python stubs are fresh")


def main():
    if sys.argv[1:] == ["--check"]:
        check()
    elif not sys.argv[1:]:
        os.makedirs(OUT, exist_ok=True)
        generate(OUT)
        print(f"wrote {', '.join(FILES)} into {os.path.relpath(OUT)}")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
