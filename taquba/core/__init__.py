"""The pure core: the record format and the state machine, with no I/O and no threads.

- ``ids``: job ids (time-ordered, and stored in 16 bytes when canonical);
- ``codec``: the field encodings shared by records and snapshots, and the record format
  version;
- ``events``: one frozen class per state change, each encoded as one log record;
- ``jobs``: one job's in-memory state;
- ``snapshot``: the whole state as one checkpoint blob;
- ``state``: the state machine, ``State.apply(event)``.

Nothing here imports the log, the storage or fsspec; import-linter keeps it so.
"""
