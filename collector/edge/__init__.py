"""The web edge: pages and API for people and machines.

Owns: the JSON API (:mod:`~collector.edge.api`), the dashboard and phone pages
(:mod:`~collector.edge.web`), token and role checks (:mod:`~collector.edge.auth`), users
and their sessions (:mod:`~collector.edge.users`, :mod:`~collector.edge.websessions`),
security headers and the static files (:mod:`~collector.edge.security`), and the phone
channel's rules (:mod:`~collector.edge.online`).

May import: the shared modules at the top of :mod:`collector`, the read side and the
outbound side (alert listings and acknowledgements, forwarding status). Of the intake,
only :mod:`collector.intake.store`: a phone rating is written through the same store as
a unit's press, never by the edge itself.
"""
