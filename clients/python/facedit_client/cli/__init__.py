"""The `facedit` command line (console script of facedit-client): `facedit --help`."""
