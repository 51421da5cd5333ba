"""opsctl: executable runbooks."""

__version__ = "0.1.0"
