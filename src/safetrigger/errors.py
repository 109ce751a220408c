"""User-facing errors: one line naming the problem and what to do about it.

The CLI prints ``error: <message>`` and exits 2 for these; anything else is a bug and
keeps its traceback.
"""


class SafeTriggerError(Exception):
    """A problem the user can fix (bad config, missing file, missing model, bad data)."""


class ConfigError(SafeTriggerError):
    """A config file or override that does not match the config dataclasses."""


class DataError(SafeTriggerError):
    """A dataset or artifact file that is missing or malformed."""


class ModelError(SafeTriggerError):
    """A model that cannot be found or loaded."""
