from prnet_keras.cli.train_model import main

raise SystemExit(main())
