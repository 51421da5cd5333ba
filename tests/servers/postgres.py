"""Re-export of ``opsctl.testing.postgres`` (moved there by issue 15): kept only while branches that
import ``tests.servers.postgres`` merge; new code imports ``opsctl.testing.postgres``."""

import opsctl.testing.postgres as _moved

globals().update({k: v for k, v in vars(_moved).items() if not k.startswith("__")})
