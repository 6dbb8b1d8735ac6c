from prnet_keras.cli.load_model import main

raise SystemExit(main())
