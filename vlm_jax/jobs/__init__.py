"""Runnable stages (run() writes outputs and a manifest), shared by commands and the demo."""
