"""kanode: neural ODEs with KAN and MLP vector fields."""

__version__ = "0.1.0"
