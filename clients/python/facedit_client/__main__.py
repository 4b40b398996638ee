"""`python -m facedit_client ...` = the `facedit` command."""
from facedit_client.cli.main import main

main()
