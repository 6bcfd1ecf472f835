"""Test helpers shipped with sight-core: the pytest plugin, embedded servers and a fault proxy.

``FaultProxy`` (also the ``fault_proxy`` fixture of the ``sight_core`` pytest plugin) puts a
slow, black-holed, resetting or refusing network between your code and a real server.
"""

from sight_core.testing.faults import ConnectionInfo, FaultProxy

__all__ = ["ConnectionInfo", "FaultProxy"]
