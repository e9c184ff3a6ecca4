"""mtlkit-headpose: a worked example of an mtlkit plugin (a regression task and a dataset).

Importing this package imports nothing heavy; mtlkit finds it through ``mtlkit_headpose.plugin``.
"""

__version__ = "0.1.0"
