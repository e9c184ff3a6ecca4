"""mtlkit-timm: any timm model as the shared trunk of a multi-task model."""

__version__ = "0.1.0"
