"""Running a run in one process and presenting it: the in-process engine, the result document
and table, and the parameter mapping (flags, Flower run config, run spec)."""
