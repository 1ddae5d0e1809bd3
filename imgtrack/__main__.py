from imgtrack.cli import main

main()
