"""``python -m ganxfer``: the command line."""

from ganxfer.cli import main

if __name__ == "__main__":
    main()
