"""``python -m raftlog.server``: the ``raftlog`` command without the console script."""

from raftlog.server.cli import main

if __name__ == "__main__":
    main(prog_name="raftlog")
