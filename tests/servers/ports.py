"""Re-export of ``opsctl.testing.ports`` (moved there by issue 15): kept only while branches that
import ``tests.servers.ports`` merge; new code imports ``opsctl.testing.ports``."""

import opsctl.testing.ports as _moved

globals().update({k: v for k, v in vars(_moved).items() if not k.startswith("__")})
