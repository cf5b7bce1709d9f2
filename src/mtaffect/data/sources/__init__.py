"""One reader per native database format; each returns frame records and decodes no image."""
