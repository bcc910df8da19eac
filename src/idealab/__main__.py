from idealab.cli import main

main()
