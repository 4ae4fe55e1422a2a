"""The subcommands of the `fastgw` command line besides serve/validate/routes (fastgw/cli.py): each
module adds its parsers and runs its command. Building the parsers imports nothing heavy (fastgw
serve sets prometheus-client's multi-process directory before the gateway's modules load)."""
