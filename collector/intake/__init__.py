"""The ingest path: from the broker to committed events and aggregate cells.

Owns: the MQTT receiver (:mod:`~collector.intake.receiver`), the supervised writer that
commits batches and only then acknowledges them (:mod:`~collector.intake.ingest`),
dating of presses (:mod:`~collector.intake.dating`), the store that writes events,
quarantine, unit state and cells in one transaction (:mod:`~collector.intake.store`),
the rebuild of cells from events (:mod:`~collector.intake.aggregates`) and retention
(:mod:`~collector.intake.retention`).

May import: the shared modules at the top of :mod:`collector`, the read side (retention
reads stream gaps), and :mod:`collector.outbound.outbox` for the lease and fencing a
standby ingest shares with the other singletons. Nothing here imports the web edge.
"""
