"""Strategies shipped with mmbot, one module each; see README.md in this folder.

Each is registered under its ``name`` in the ``mmbot.strategies`` entry-point group, so a
config can say ``strategy = "fixed_spread"`` instead of ``"strategies.fixed_spread:FixedSpread"``.
"""

from strategies.fixed_spread import FixedSpread, FixedSpreadParams
from strategies.inventory_skew import InventorySkew, InventorySkewParams
from strategies.size_aware import SizeAware, SizeAwareParams

__all__ = [
    "FixedSpread",
    "FixedSpreadParams",
    "InventorySkew",
    "InventorySkewParams",
    "SizeAware",
    "SizeAwareParams",
]
