"""fwsg as an OpenStack Neutron agent firewall driver (``firewall_driver = fwsg``).

Neutron is optional: nothing here imports it. The agent finds the driver through the
``neutron.agent.firewall_drivers`` entry points (``fwsg``, ``fwsg_hybrid``) and calls it as it
calls its own iptables drivers. See ``docs/neutron.md``.
"""

from fwsg.neutron.driver import FwsgFirewallDriver, FwsgHybridFirewallDriver, tap_name

__all__ = ["FwsgFirewallDriver", "FwsgHybridFirewallDriver", "tap_name"]
