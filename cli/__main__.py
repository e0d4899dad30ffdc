from fedrx.cli.main import entry

entry()
