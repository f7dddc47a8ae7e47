"""The collector: takes rating events from units over MQTT (and from the phone page),
keeps them, derives scores, and sends what is due to the M&E IS, mail and webhooks.

Four parts run apart and are kept apart by :mod:`tests.test_layout`:

- :mod:`collector.intake`: the ingest path, from the broker to committed events and
  aggregate cells (receiver, ingest writer, dating, the store, rebuild, retention);
- :mod:`collector.reading`: the read side, figures from the cells (scores, series,
  charts, fleet, gaps, names); it never imports the intake;
- :mod:`collector.outbound`: what goes out, each through an outbox (forwarding to
  DHIS2, webhooks, mail, alerts and digests);
- :mod:`collector.edge`: the web edge, pages and API for people and machines (auth,
  sessions, the phone channel); it writes events only through the intake's store.

What they share sits here at the top: settings (:mod:`collector.config`), the
database (:mod:`collector.db`, :mod:`collector.models`), the registry
(:mod:`collector.registry`, :mod:`collector.hours`), metrics and the client address
helper. Those modules import no part. :mod:`collector.main` assembles the app from the
parts; :mod:`collector.cli` is the entry point and nothing imports it.
"""
