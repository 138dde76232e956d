"""Every stage as a flag-free run(): the commands, the demo and the tests call these."""
