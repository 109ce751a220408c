from safetrigger.cli import main

raise SystemExit(main())
