"""lscape: loss-landscape geometry of trained networks, measured from saved checkpoints."""

__version__ = "0.1.0"
