"""``[core] hostname_callable`` of the distributed stack: each component reports its machine's name.

All of the stack's processes share one host, so the real hostname cannot tell the Celery workers
(or the triggerers) apart. `DistributedStack` gives every component a machine name in
``TOKENTIER_E2E_MACHINE``; task instances' ``hostname`` and jobs' ``hostname`` then say which
"machine" ran them.
"""

from __future__ import annotations

import os
import socket

#: The environment variable holding the machine name of a component.
MACHINE_VARIABLE = "TOKENTIER_E2E_MACHINE"


def hostname() -> str:
    """This process's machine name, else the real fully qualified hostname."""
    return os.environ.get(MACHINE_VARIABLE) or socket.getfqdn()
