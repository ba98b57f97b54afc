"""``consolidator export``: records, books and features into partitioned Parquet or CSV.

- `consolidator.export.schema`: the Arrow schemas (the column lists are the documentation).
- `consolidator.export.columns`: exact Arrow columns from ring records.
- `consolidator.export.files`: partitioned, atomic Parquet/CSV files.
- `consolidator.export.inputs`: a stream from the journal on into the live ring, up to now.
- `consolidator.export.books`: book and feature rows (sampler + events + trade flow).
- `consolidator.export.job`: the export itself (`run_export`).
"""
