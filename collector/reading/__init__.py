"""The read side: figures for people, from aggregate cells and the registry.

Owns: scores with their intervals (:mod:`~collector.reading.scores`), series over
periods (:mod:`~collector.reading.series`), the SVG charts
(:mod:`~collector.reading.charts`), the fleet view (:mod:`~collector.reading.fleet`),
seq gaps of a unit's streams (:mod:`~collector.reading.gaps`) and cached display names
(:mod:`~collector.reading.names`).

May import: the shared modules at the top of :mod:`collector` only. It never imports
the intake, the outbound side or the web edge, and writes nothing.
"""
