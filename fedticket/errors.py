"""The one exception type that the CLI turns into a single line on stderr."""


class UserError(Exception):
    """Bad input from a user (config, flag, file): the message names the problem and the fix."""


class ConfigError(UserError, ValueError):
    """A config key is unknown, has the wrong type or an impossible value."""
