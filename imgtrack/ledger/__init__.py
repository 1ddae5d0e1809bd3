"""The ledger: records and facts under `.imgtrack/ledger/` (the truth), and a lookup cache beside git.

`schema` is the file formats, `store` the files (places, lock, atomic writes), `index` the SQLite
cache (the other two never import it), `migrate` the move from schema 1, and `ledger` puts them
together for the commands. Nothing is imported here, so that reading a format costs no more than it.
"""
