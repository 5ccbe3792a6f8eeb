from hqjepa.cli import main

raise SystemExit(main())
