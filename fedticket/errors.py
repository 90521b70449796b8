"""The one exception type that the CLI turns into a single line on stderr."""


class UserError(Exception):
    """Bad input from a user (config, flag, file): the message names the problem and the fix."""


class ConfigError(UserError, ValueError):
    """A config key is unknown, has the wrong type or an impossible value."""


class RunError(Exception):
    """A run that started and then failed (a Flower process, a crash): the CLI prints the one
    line that says why and exits 1; the details are in the log file the message names."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) stopped a run; the message says what was kept and how to resume."""
