"""Maintenance jobs over a pool: fsck now; scrub, repair, GC, drain and tiering later.

They use the engine and store layers' own formats and queries and never duplicate their logic.
"""
