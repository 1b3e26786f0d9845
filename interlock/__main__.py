from interlock.core.cli import main

raise SystemExit(main())
