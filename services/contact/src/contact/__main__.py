from contact.app import main

main()
