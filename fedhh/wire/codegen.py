"""Generate the Python code of the wire contract (``protos/fedhh/v1/*.proto``).

``python -m fedhh.wire.codegen`` (or ``make proto``) regenerates ``fedhh/wire/v1/``; the test
suite regenerates into a temporary directory and fails when the checked-in code is stale.
protoc names imports after the proto package (``fedhh.v1``); they are rewritten to the package the
code lives in (``fedhh.wire.v1``).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "protos"
PACKAGE_DIR = Path(__file__).resolve().parent / "v1"
_IMPORT_FROM = "from fedhh.v1 import"
_IMPORT_TO = "from fedhh.wire.v1 import"
_INIT = '"""Generated from protos/fedhh/v1 by fedhh.wire.codegen (make proto). Do not edit."""\n'


def proto_files(proto_dir: Path = PROTO_DIR) -> list[Path]:
    return sorted((proto_dir / "fedhh" / "v1").glob("*.proto"))


def generate(out_dir: Path, proto_dir: Path = PROTO_DIR) -> list[Path]:
    """Generate the modules of every .proto file into ``out_dir`` (created); return the files."""
    import grpc_tools
    from grpc_tools import protoc  # build-time dependency (dev extra)

    protos = proto_files(proto_dir)
    if not protos:
        raise FileNotFoundError(f"no .proto files under {proto_dir / 'fedhh' / 'v1'}")
    include = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *(str(p.relative_to(proto_dir)) for p in protos),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed on " + ", ".join(str(p) for p in protos))
        src = Path(tmp) / "fedhh" / "v1"
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for f in sorted(src.iterdir()):
            text = f.read_text().replace(_IMPORT_FROM, _IMPORT_TO)
            (out_dir / f.name).write_text(text)
            written.append(out_dir / f.name)
    (out_dir / "__init__.py").write_text(_INIT)
    written.append(out_dir / "__init__.py")
    return written


def main() -> int:
    if PACKAGE_DIR.exists():
        shutil.rmtree(PACKAGE_DIR)
    for f in generate(PACKAGE_DIR):
        print(f.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
