from funnelsync.cli import main

main()
