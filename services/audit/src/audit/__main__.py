from audit.app import main

main()
