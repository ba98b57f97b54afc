"""The feed writer process (``consolidator run FEED``): connections, REST, rotation, rings.

``connection``: one websocket with receive-time stamping; ``supervisor``: reconnects, watchdog
and make-before-break rotation of one planned connection; ``rest`` and ``http``: paced REST;
``snapshots``: coalesced snapshot fetches; ``publisher``: protocol outputs into the rings;
``writer``: the process; ``main``: the entry point.
"""

__all__: list[str] = []
