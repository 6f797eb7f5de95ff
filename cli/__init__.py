"""The `agora` command line: flags and settings, `--dev`, `proxy-config`."""
