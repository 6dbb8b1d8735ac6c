from prnet_keras.cli.evaluate_model import main

raise SystemExit(main())
