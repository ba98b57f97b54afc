"""mdcompare: a feed's rings checked, record by record, against an independent reference.

- `model`: the record both sides are reduced to (`Rec`) and the compared fields per stream.
- `binance_ref`: the reference's own Binance parser (stdlib + orjson, never the writer's).
- `client`: the reference WebSocket connections (websockets), with their own gaps.
- `ringside`: a feed's rings (or journal) as a registered reader, reduced to `Rec`.
- `matcher`: exact matching by venue ids: matched, missing, extra, mismatched, duplicated.
- `latency`: bounded latency samples and their quantiles.
- `report`: the report's fields (DESIGN.md "mdcompare FEED"), text and JSON.
- `output`: per-symbol CSV and PNG plots for ``--out DIR``.
- `run`: the comparator's event loop, tying the pieces together.
"""
