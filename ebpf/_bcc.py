"""Import Debian's BCC (``python3-bpfcc``) into the virtualenv's Python.

The package is pure Python over ``libbcc.so.0`` and installs into
``/usr/lib/python3/dist-packages``. Adding that whole folder to ``sys.path``
would let Debian's copies of numpy, grpc, yaml … shadow the venv's, so only the
``bcc`` package is loaded, from its own folder, without touching ``sys.path``
(DESIGN.md, "BCC").
"""

from __future__ import annotations

import importlib.util
import sys
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
    spec = importlib.util.spec_from_file_location("bcc", source / "__init__.py",
                                                  submodule_search_locations=[str(source)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bcc"] = module  # before running it: it imports its own submodules (bcc.libbcc, …)
    try:
        spec.loader.exec_module(module)
    except (ImportError, OSError) as exc:  # OSError: libbcc.so.0 missing or unloadable
        for name in [m for m in sys.modules if m == "bcc" or m.startswith("bcc.")]:
            del sys.modules[name]
        raise ProbeOff("bcc_missing", f"BCC at {source} does not import: {exc}") from None
    return module
