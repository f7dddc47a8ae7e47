"""What goes out, each through an outbox that retries and parks a row with a reason.

Owns: the shared outbox machinery (backoff, leases, fencing, parking:
:mod:`~collector.outbound.outbox`); forwarding to the M&E IS (planning, the DHIS2
adapter, the mapping and its metadata package, ``forward check``:
:mod:`~collector.outbound.planning`, :mod:`~collector.outbound.forward`,
:mod:`~collector.outbound.dhis2`, :mod:`~collector.outbound.mapping`,
:mod:`~collector.outbound.me_check`); webhooks; mail; alerts and digests
(:mod:`~collector.outbound.alerts`) and the engine that runs them
(:mod:`~collector.outbound.alert_engine`).

May import: the shared modules at the top of :mod:`collector` and the read side. It
never imports the intake or the web edge.
"""
