from prnet_keras.cli.texture import main

if __name__ == "__main__":
    raise SystemExit(main())
