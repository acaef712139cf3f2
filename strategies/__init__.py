"""Strategies shipped with mmbot, one module each; see README.md in this folder.

Installed as the package ``mmbot_strategies``. Each is registered under its ``name`` in the
``mmbot.strategies`` entry-point group, so a config can say ``strategy = "fixed_spread"``
instead of ``"mmbot_strategies.fixed_spread:FixedSpread"``.
"""

from mmbot_strategies.fixed_spread import FixedSpread, FixedSpreadParams
from mmbot_strategies.inventory_skew import InventorySkew, InventorySkewParams
from mmbot_strategies.size_aware import SizeAware, SizeAwareParams

__all__ = [
    "FixedSpread",
    "FixedSpreadParams",
    "InventorySkew",
    "InventorySkewParams",
    "SizeAware",
    "SizeAwareParams",
]
