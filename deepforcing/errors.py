"""Errors the harness raises for bad input, before any heavy work."""


class ConfigError(ValueError):
    """A configuration or input is invalid. The message says what is wrong and how to fix it."""


class WeightsError(FileNotFoundError):
    """Model files are missing or do not match the expected format."""
