from grokscope.cli import main

raise SystemExit(main())
