"""``python -m tasker``: the same as the ``tasker`` command."""

from tasker._cli import main

if __name__ == "__main__":
    main()
