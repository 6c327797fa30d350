from safesail_guard.cli import main

main()
