"""`python -m nixfleet.secrets ARGS` runs `nixfleet secrets ARGS`."""

from nixfleet.secrets.cli import main

raise SystemExit(main())
