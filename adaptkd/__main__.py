from adaptkd.cli import main

raise SystemExit(main())
