from hdlgen.cli import main

raise SystemExit(main())
