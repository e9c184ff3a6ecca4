"""Error types users see; each carries a message that names what went wrong and where."""

from __future__ import annotations

EXIT_INTERRUPTED = 75
"""Exit status of a run stopped cleanly on a signal (``EX_TEMPFAIL``: try again, e.g. requeue).
Here, beside the errors, so torch-free modules (the CLI, sweeps) can use it."""


class MtlkitError(Exception):
    """Base of every error mtlkit raises on purpose (the CLI prints these without a traceback)."""


class ConfigError(MtlkitError):
    """A config file or override is invalid; the message names the field path."""


class RegistryError(MtlkitError):
    """A name is unknown, invalid, registered twice, or resolves to a wrong class."""


class PluginError(MtlkitError):
    """A plugin failed to import or its hook raised."""


class CapabilityError(MtlkitError):
    """A component was asked for something it does not provide (e.g. a per-step metric)."""


class CheckpointError(MtlkitError):
    """A checkpoint is missing, corrupt, incompatible or unsafe to load."""


class DataError(MtlkitError):
    """Input data is missing, unreadable or inconsistent; the message names the file or row."""


class NonFiniteLossError(MtlkitError):
    """A task loss became NaN or Inf; the message names the task and the step."""


class WeighterError(MtlkitError):
    """A weighter returned an update that breaks the contract (e.g. a negative head weight)."""
