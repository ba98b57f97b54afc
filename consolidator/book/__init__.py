"""Order books rebuilt from a feed's records, and the microstructure features computed on them.

- `consolidator.book.book`: the exact L2 `OrderBook` and its validity rules.
- `consolidator.book.features`: midprice, spread, microprice, imbalance, OFI, depth, trade flow.
- `consolidator.book.sampler`: books and features sampled at exchange-time intervals (the rows
  ``consolidator export --stream book|features`` writes and ``mdbook`` shows).
"""
