from prnet_keras.cli.build_dataset import main

raise SystemExit(main())
