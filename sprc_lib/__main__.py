from sprc_lib.cli import main

raise SystemExit(main())
