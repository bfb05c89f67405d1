"""The command line: one small module per verb, each parsing arguments and calling the Python API."""
