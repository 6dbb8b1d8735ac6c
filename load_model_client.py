from prnet_keras.cli.client import main

raise SystemExit(main())
