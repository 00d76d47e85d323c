from agentos.cli import main

main()
