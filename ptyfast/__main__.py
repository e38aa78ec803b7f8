from ptyfast.cli import main

main()
