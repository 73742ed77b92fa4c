"""Errors that are the user's to fix: the CLI prints them as one line, without a traceback."""


class ConfigError(ValueError):
    """An impossible config value; the message names the key (exit code 2)."""


class UserFacingError(RuntimeError):
    """Missing or damaged input (data, weights); the message names the file and the fix (exit code 1)."""
