"""Regenerate the committed protobuf/gRPC code from proto/neuroflow/v1/*.proto.

Run from anywhere: ``python proto/generate.py``. ``--check`` regenerates into a
temporary folder and exits non-zero if the committed files differ (the test
suite runs it so the two never drift).
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
PACKAGE = PROTO_ROOT / "neuroflow" / "v1"


def generate(out: Path) -> None:
    from grpc_tools import protoc  # dev dependency, only needed here

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PACKAGE.glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed: " + " ".join(args))
    # Only services get a non-trivial *_pb2_grpc.py; drop the empty ones.
    for grpc_file in (out / "neuroflow" / "v1").glob("*_pb2_grpc.py"):
        if "class " not in grpc_file.read_text():
            grpc_file.unlink()


def generated_files(root: Path) -> set[str]:
    return {p.name for p in (root / "neuroflow" / "v1").iterdir() if "_pb2" in p.name}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    args = parser.parse_args()
    if not args.check:
        generate(PROTO_ROOT)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh, committed = generated_files(Path(tmp)), generated_files(PROTO_ROOT)
        stale = sorted(fresh ^ committed)
        for name in sorted(fresh & committed):
            if not filecmp.cmp(Path(tmp, "neuroflow", "v1", name), PACKAGE / name, shallow=False):
                stale.append(name)
        if stale:
            print("generated protocol code is stale: " + ", ".join(stale), file=sys.stderr)
            print("run: python proto/generate.py", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
