"""Bundled simulators: CNC machines over OPC UA and energy meters over Modbus.

Real servers on real sockets, driven by a seeded scenario, writing a ground-truth
ledger. Entry points: :class:`simulators.plant.Plant` (both servers and the model
clock), :func:`simulators.scenario.load_scenario` and
:func:`simulators.scenario.default_scenario`; ``python -m simulators`` runs standalone.

Modules: ``scenario`` (TOML -> validated models), ``schedule`` (shift calendar),
``machine`` and ``meter`` (pure behaviour models), ``nodes`` (the OPC UA node table),
``registers`` (Modbus maps), ``ledger`` (JSON Lines truth), ``opcua_server``,
``modbus_server``, ``plant`` (with the table of scheduled faults).
Nothing here imports the agent or the collectors.
"""
