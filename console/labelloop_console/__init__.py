"""labelloop's operator console: the ``labelloop`` command, the demo campaign, the status view,
the campaign report and the process supervisor.

It talks to the services only through the bus (events, KV, object store) and reads their pure
domain code where a command runs the same maths offline (``labelloop agreement``). No service
imports it: a service image carries none of its dependencies (Typer, Rich, matplotlib).
"""
