"""`python -m retcon.cli`: the same as `kubectl retcon`."""

from retcon.cli import main

if __name__ == "__main__":
    main()
