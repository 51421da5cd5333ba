"""Re-export of ``opsctl.testing.redis`` (moved there by issue 15): kept only while branches that
import ``tests.servers.redis`` merge; new code imports ``opsctl.testing.redis``."""

import opsctl.testing.redis as _moved

globals().update({k: v for k, v in vars(_moved).items() if not k.startswith("__")})
