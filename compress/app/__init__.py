"""The jobs behind the command line: options, recipes, run directories and plots."""
