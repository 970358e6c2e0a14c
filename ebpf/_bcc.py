"""Import Debian's BCC (``python3-bpfcc``) into the virtualenv's Python.

The package is pure Python over ``libbcc.so.0`` and installs into
``/usr/lib/python3/dist-packages``. Adding that whole folder to ``sys.path``
would let Debian's copies of numpy, grpc, yaml … shadow the venv's, so only the
``bcc`` package is exposed: a private folder holding one symlink to it goes on
``sys.path`` (DESIGN.md, "BCC").
"""

from __future__ import annotations

import importlib
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from neuroflow.ebpf.errors import ProbeOff

DIST_PACKAGES = Path("/usr/lib/python3/dist-packages")


def import_bcc(dist_packages: Path = DIST_PACKAGES) -> ModuleType:
    """Return the ``bcc`` module, or raise :class:`ProbeOff` (``bcc_missing``) saying how to get it."""
    if "bcc" in sys.modules:
        return sys.modules["bcc"]
    source = dist_packages / "bcc"
    if not (source / "__init__.py").is_file():
        raise ProbeOff("bcc_missing", f"BCC is not installed ({source} is missing): apt-get install python3-bpfcc")
    shim = Path(tempfile.mkdtemp(prefix="neuroflow-bcc-"))
    (shim / "bcc").symlink_to(source)
    sys.path.insert(0, str(shim))
    try:
        return importlib.import_module("bcc")
    except (ImportError, OSError) as exc:  # OSError: libbcc.so.0 missing or unloadable
        raise ProbeOff("bcc_missing", f"BCC at {source} does not import: {exc}") from None
