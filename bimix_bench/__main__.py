from bimix_bench.cli.app import main

main()
