from ocrlib.cli import main

raise SystemExit(main())
