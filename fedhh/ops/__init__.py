"""Operations: ``fedhh deploy local``, the processes a command starts, and the SQLite state
files."""
