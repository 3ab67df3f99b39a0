from nixfleet.cli import main

raise SystemExit(main())
