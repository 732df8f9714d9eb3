"""Commissioning commands: look into a device before writing its config.

``edge-agent browse`` shows an OPC UA server's address space with the node ids, types
and values a signal needs; ``edge-agent modbus-read`` shows raw registers decoded every
plausible way, so the type and word order can be matched against the device's display.
Each module has a thin ``add_arguments``/``run`` pair for ``agent/cli.py``; the
protocol libraries are imported only when a command runs.
"""
