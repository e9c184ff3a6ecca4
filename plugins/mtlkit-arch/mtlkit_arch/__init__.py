"""mtlkit-arch: multi-task architectures beyond one shared trunk."""

__version__ = "0.1.0"
