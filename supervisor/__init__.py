"""The root supervisor: agents' sandboxes, worker pools, releases, the gRPC service.

gRPC's fork handlers are turned off before anything imports grpc: the
supervisor starts sandbox launchers with fork+exec while gRPC threads run, and
those handlers, run in the child between fork and exec, crashed it now and
then (SIGSEGV, "Other threads are currently calling into gRPC, skipping fork()
handlers"). The children exec at once and never use gRPC.
"""

import os as _os

_os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
