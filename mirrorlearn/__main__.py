from mirrorlearn.cli import main

raise SystemExit(main())
