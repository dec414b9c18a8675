"""`python -m metrictank.cli ...`: how tests, the demo and the integration harness start the command."""

from metrictank.cli import main

if __name__ == "__main__":
    main()
